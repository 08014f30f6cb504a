"""The package's imports run one way: cli → app → engines/report/demo → stages → index → sources/models → leaves.

Every module is parsed with ``ast``, imports inside functions included (they hide cycles from
the interpreter, not from this test).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "imgextract"
RANK = {"leaf": 0, "sources": 1, "models": 1, "index": 2, "stages": 3, "engines": 4, "report": 4, "demo": 4,
        "app": 5, "cli": 6, "api": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if module in ("imgextract", "imgextract.__main__"):
        return "api"
    if len(parts) == 2 and parts[1] not in RANK:
        return "leaf"
    return parts[1]


def imports(path: Path) -> set[str]:
    """imgextract modules one module imports, anywhere in it; ``from pkg import mod`` names the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "imgextract"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "imgextract":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def graph() -> dict[str, set[str]]:
    return {m: {t for t in imports(p) if t != m} for m, p in MODULES.items()}


def test_the_layout_is_the_documented_one():
    assert {layer(m) for m in MODULES} == set(RANK), sorted(MODULES)
    for leaf in ("errors", "locks", "rundir", "progress", "stats", "folders", "distance", "hashes"):
        assert f"imgextract.{leaf}" in MODULES


def test_imports_only_go_down():
    upward = []
    for src, targets in graph().items():
        for dst in targets:
            a, b = layer(src), layer(dst)
            if a != b and not RANK[b] < RANK[a]:
                upward.append(f"{src} ({a}) imports {dst} ({b})")
    assert not upward, "\n".join(sorted(upward))


CLI_MAY_IMPORT = ("imgextract.app", "imgextract.cli", "imgextract.errors")


def test_the_command_line_calls_only_the_app():
    """A command is its options and one call into imgextract.app: nothing below it is imported by cli/."""
    below = sorted(f"{src} imports {dst}" for src, targets in graph().items() if layer(src) == "cli"
                   for dst in targets if not dst.startswith(CLI_MAY_IMPORT))
    assert not below, "\n".join(below)


def test_a_command_reaching_past_the_app_would_be_caught(monkeypatch, tmp_path):
    fake = tmp_path / "bad.py"
    fake.write_text("def f():\n    from imgextract.stages.scan import ScanParams\n")
    monkeypatch.setitem(MODULES, "imgextract.cli.bad", fake)
    with pytest.raises(AssertionError, match="imgextract.cli.bad imports imgextract.stages.scan"):
        test_the_command_line_calls_only_the_app()


def test_no_import_cycles():
    g = graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_only_the_command_line_knows_typer():
    users = []
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("typer", "click") for n in names) and layer(m) != "cli":
                users.append(m)
    assert not users, users


@pytest.mark.parametrize("source, expected", [
    ("from imgextract.stages import scan\n", {"imgextract.stages.scan"}),
    ("def f():\n    from imgextract.app.commands import run_scan\n", {"imgextract.app.commands"}),
    ("import imgextract.cli\n", {"imgextract.cli"}),
])
def test_the_parser_sees_imports_inside_functions(tmp_path, source, expected):
    f = tmp_path / "m.py"
    f.write_text(source)
    assert imports(f) == expected


def test_an_upward_import_would_be_caught(monkeypatch, tmp_path):
    """The rule itself can fail: a stage that imports the command line is reported."""
    fake = tmp_path / "bad.py"
    fake.write_text("def f():\n    from imgextract.cli import app\n")
    monkeypatch.setitem(MODULES, "imgextract.stages.bad", fake)
    with pytest.raises(AssertionError, match="imgextract.stages.bad"):
        test_imports_only_go_down()


def test_no_module_is_crowded():
    """A module a newcomer can read in one sitting: over 600 lines, split it by what its parts do."""
    crowded = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not crowded, crowded
