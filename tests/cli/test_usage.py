"""Usage errors and bad input on every command: exit 2, one line, before any work."""

from __future__ import annotations


import pytest

from helpers import expect_error, run


@pytest.mark.parametrize("args, words", [
    ((), "Usage:"),
    (("nosuch",), "No such command"),
    (("guard", "x.png"), "Missing option '--index'"),
    (("guard", "x.png", "--index", "i", "-k", "abc"), "Invalid value for '-k'"),
    (("index", "build", "x", "--name", "y", "--bogus"), "No such option"),
])
def test_usage_errors(args, words):
    code, out, err = run(*args)
    assert code == 2 and "Traceback" not in err + out
    assert words in err + out


@pytest.mark.parametrize("args, words", [
    (("triage", "{tmp}/missing.txt", "--model", "{tmp}/m", "--out", "{tmp}/t.parquet"), ["missing.txt", "does not exist"]),
    (("compare", "{tmp}/a", "{tmp}/b", "--out", "{tmp}/c"), ["{tmp}/a"]),
    (("run", "{tmp}/audit.toml"), ["audit.toml", "does not exist"]),
    (("report", "{tmp}"), ["matches.parquet"]),
    (("index", "info", "nosuch"), ["nosuch", "not found"]),
    (("index", "search", "nosuch", "{tmp}/x.png"), ["nosuch", "not found"]),
    (("watermarks", "{tmp}/nofolder"), ["nofolder"]),
    (("cliques", "{tmp}"), ["not a run folder"]),
])
def test_every_command_refuses_bad_input_with_exit_2(tmp_path, args, words):
    fill = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run(*fill, env_extra={"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")})
    expect_error(code, err, *[w.replace("{tmp}", str(tmp_path)) for w in words])
