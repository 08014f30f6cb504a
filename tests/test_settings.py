"""Each setting's default has one owner: the copy rule's threshold (0.15) and substantial share (0.25) are written in
imgextract/rule.py only; everywhere else a default, a keyword or a fallback names ``CopyRule`` (or
``distance.DEFAULT_THRESHOLD``, which is the rule's)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imgextract"
OWNED = {0.15: "threshold", 0.25: "min_share"}


def default_literals(tree: ast.AST):
    """(line, value) of every 0.15/0.25 used as a default: an argument's default, a class field's default, a
    keyword argument's value, or a dict.get / getattr fallback."""
    def owned(node):
        return isinstance(node, ast.Constant) and type(node.value) is float and node.value in OWNED
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            yield from ((d.lineno, d.value) for d in node.defaults + [d for d in node.kw_defaults if d] if owned(d))
        elif isinstance(node, ast.ClassDef):
            yield from ((s.value.lineno, s.value.value) for s in node.body
                        if isinstance(s, ast.AnnAssign) and s.value is not None and owned(s.value))
        elif isinstance(node, ast.Call):
            yield from ((k.value.lineno, k.value.value) for k in node.keywords if owned(k.value))
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("get", "getattr") and len(node.args) >= 2 and owned(node.args[-1]):
                yield node.args[-1].lineno, node.args[-1].value


def test_the_threshold_and_share_defaults_are_written_only_by_their_owner():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "rule.py" and path.parent == PACKAGE:
            continue
        for line, value in default_literals(ast.parse(path.read_text(), str(path))):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {value} ({OWNED[value]}'s default)")
    assert not found, "defaults written outside imgextract/rule.py:\n" + "\n".join(found)
    rule = ast.parse((PACKAGE / "rule.py").read_text())
    assert sorted(v for _, v in default_literals(rule)) == [0.15, 0.25]


def test_the_check_finds_a_written_out_default():
    planted = ast.parse("def scan(run, threshold: float = 0.15):\n    return judge(run, min_share=0.25)\n")
    assert sorted(v for _, v in default_literals(planted)) == [0.15, 0.25]


# the commands whose options are an owner's settings (an option with a field's name takes the field's default)
OWNERS = {"scan": ("ScanParams",), "guard": ("ScanParams",), "serve": ("ScanParams", "ServeConfig"),
          "generate": ("SamplingConfig",), "triage": ("TriageParams",), "triage-eval": ("TriageParams",),
          "cliques": ("CliqueParams",), "check": ("CheckSettings",), "demo": ("DemoSettings",)}


def option_defaults(fn) -> dict[str, ast.expr]:
    """Each parameter's default as written in the command's source."""
    import inspect
    import textwrap
    node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    args = node.args.args
    return {a.arg: d for a, d in zip(args[len(args) - len(node.args.defaults):], node.args.defaults)}


# index build's options that name a field in another form (a memory string, 0 for "chosen")
INDEX_BUILD_OWN = {"max_memory", "workers", "processes"}


def test_each_commands_defaults_are_its_settings_owners():
    import dataclasses
    import inspect

    from imgextract.app import settings
    from imgextract.cli import audit, index, toy, users
    commands = {**audit.COMMANDS, **users.COMMANDS, "index build": index.index_build,
                "index duplicates": index.index_duplicates, "toy train": toy.toy_train}
    wrong, checked = [], 0
    for name, owners in {**OWNERS, "index build": ("BuildSettings",), "index duplicates": ("DuplicateParams",),
                         "toy train": ("ToyConfig",)}.items():
        fields = {f.name: (o, f.default) for o in owners for f in dataclasses.fields(getattr(settings, o))
                  if f.default is not dataclasses.MISSING}
        written = option_defaults(commands[name])
        for p in inspect.signature(commands[name]).parameters.values():
            if p.name not in fields or name == "index build" and p.name in INDEX_BUILD_OWN:
                continue
            checked += 1
            owner, default = fields[p.name]
            if p.default != default:
                wrong.append(f"{name} --{p.name}: {p.default!r}, but {owner}.{p.name} is {default!r}")
            node = written[p.name]
            if isinstance(node, ast.Constant) and node.value is not None or isinstance(node, ast.BinOp):
                wrong.append(f"{name} --{p.name}: the default is written out ({ast.unparse(node)}); name {owner}")
    assert checked >= 25 and not wrong, "\n".join(wrong)


def test_architectures_table_of_defaults_names_real_owners_and_the_rules_values():
    """ARCHITECTURE.md's 'Where each default lives' stays true: every owner it names exists, and the copy rule's
    values it quotes are the rule's."""
    import importlib
    import re

    from imgextract.rule import CopyRule
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    table = text[text.index("## Where each default lives"):text.index("## Contracts")]
    owners = re.findall(r"^\| [^|]+ \| `([\w.]+)`", table, flags=re.M)
    assert len(owners) >= 10
    for dotted in owners:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(f"imgextract.{module}"), name), dotted
    quoted = re.search(r"threshold ([\d.]+), substantial share ([\d.]+), tile grid (\d+)", table).groups()
    assert tuple(map(float, quoted)) == (CopyRule.threshold, CopyRule.min_share, CopyRule.grid)
