"""The suite cannot hide a broken build: no test skips because one of stackpep's
own (compiled) modules fails to import -- a missing module is a failure."""
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SKIP_ON_OWN_IMPORT = re.compile(r"""importorskip\(\s*["']stackpep""")


def test_no_test_skips_on_a_missing_stackpep_module():
    offenders = [f"{p.name}:{n}" for p in sorted(TESTS.glob("*.py")) if p.name != Path(__file__).name
                 for n, line in enumerate(p.read_text().splitlines(), 1) if SKIP_ON_OWN_IMPORT.search(line)]
    assert offenders == []
