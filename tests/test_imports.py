"""No import cycles among stackpep's modules.

Walks every ``import`` in stackpep/**/*.py (and the compiled modules' .pyx
sources) with ast -- module level, inside functions and under TYPE_CHECKING
alike, since a cycle hidden in any of them is still a cycle in the design --
and fails on any cycle, naming it.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "stackpep"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        mods[_module_name(path)] = path
    for path in sorted(PKG.rglob("*.pyx")):
        mods.setdefault(_module_name(path), path)
    return mods


def _resolve(name: str, mods) -> str:
    """The stackpep module an import names (``a.b.C`` -> ``a.b`` if C is not a module)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def _imports_py(path: Path, mod: str, mods):
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import mod`` imports pkg.mod; ``from mod import name`` imports mod
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]
        else:
            continue
        for n in names:
            if n == "stackpep" or n.startswith("stackpep."):
                target = _resolve(n, mods)
                if target and target != mod and target != "stackpep":
                    out.add(target)
    return out


_CIMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\s+\(?\s*(\w+)|c?import\s+([\w.]+))", re.M)


def _imports_pyx(path: Path, mod: str, mods):
    out = set()
    for m in _CIMPORT.finditer(path.read_text()):
        if m.group(1):
            n = m.group(1)
            if f"{n}.{m.group(2)}" in mods:
                n = f"{n}.{m.group(2)}"
        else:
            n = m.group(3)
        if n.startswith("stackpep."):
            target = _resolve(n, mods)
            if target and target != mod:
                out.add(target)
    return out


def import_graph():
    mods = _modules()
    graph = {}
    for mod, path in mods.items():
        f = _imports_py if path.suffix == ".py" else _imports_pyx
        graph[mod] = f(path, mod, mods)
    return graph


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack = []

    def visit(n):
        colour[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if colour.get(m, BLACK) == GREY:
                return stack[stack.index(m):] + [m]
            if colour.get(m) == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(graph):
        if colour[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def test_the_walker_sees_function_level_and_type_checking_imports():
    graph = import_graph()
    # stackpep.cli imports the layers' command modules inside a function
    assert "stackpep.pep.cli" in graph["stackpep.cli"]
    assert "stackpep.pep.splitter" in graph["stackpep.pep.dispatcher"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
