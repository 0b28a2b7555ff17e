"""docs/ARCHITECTURE.md speaks the code's own names: every backticked name in
its "Where things happen" and "Data path of one segment" sections exists
(``Class.member`` in the file that defines Class, a bare name anywhere)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for ext in ("py", "pyx", "pxi", "pxd") for p in (ROOT / "stackpep").rglob(f"*.{ext}")]
NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)`")


def _sections():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    out = {}
    for title in ("Where things happen", "Data path of one segment"):
        m = re.search(rf"^## {title}\n(.*?)(?=^## )", text, re.M | re.S)
        assert m, f"docs/ARCHITECTURE.md lacks the section {title!r}"
        out[title] = m.group(1)
    return out


def _defines(text: str, name: str) -> bool:
    return re.search(
        rf"^\s*(?:async\s+def|def|class|cdef\s+class|cdef(?:\s+(?:inline|public))*\s+[\w*\[\]]+(?:\s+[\w*]+)*?)\s+{name}\b"
        rf"|^\s*{name}\s*[:=]|^\s*self\.{name}\s*[:=]|^\s*cdef\s+public\s+\w+\s+{name}\b"
        rf"|__slots__\s*=.*[\"']{name}[\"']",
        text, re.M) is not None


def _exists(name: str) -> bool:
    texts = {p: p.read_text() for p in SOURCES}
    if "." in name:
        cls, member = name.split(".")
        homes = [t for t in texts.values() if re.search(rf"^\s*(?:cdef\s+)?class\s+{cls}\b", t, re.M)]
        return any(_defines(t, member) for t in homes)
    if any(_defines(t, name) for t in texts.values()):
        return True
    # a file or folder the doc names (`cc.pxi`)
    return any(p.name == name for p in SOURCES)


def test_every_backticked_name_in_the_data_path_exists():
    missing = []
    seen = 0
    for title, body in _sections().items():
        for name in NAME.findall(body):
            if name.isupper() or name in ("relay_buffer",):  # phase/state names, config keys
                continue
            seen += 1
            if not _exists(name):
                missing.append(f"{title}: {name}")
    assert seen > 20
    assert missing == []


def test_the_checker_refuses_a_name_that_does_not_exist():
    assert _exists("SplitConnection._relay")
    assert not _exists("SplitConnection._relay_everything")
    assert not _exists("linkemu_run")
