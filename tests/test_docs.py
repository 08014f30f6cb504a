"""The docs site builds strictly (a broken link or a missing page fails the suite), its command reference
lists every command and option that `imgextract --help` shows, and README stays a five-minute read."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).parent / "mkdocs"
WIDE = {"COLUMNS": "200", "TERM": "dumb"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    p = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert p.returncode == 0, p.stderr
    return out


def _commands(*group: str) -> list[str]:
    code, out, err = run(*group, "--help", env_extra=WIDE)
    assert code == 0, err
    box = out.split("Commands", 1)[1]
    return re.findall(r"^│ ([a-z][a-z-]*) ", box, flags=re.M)


def test_the_reference_lists_every_command_and_option_of_the_help(site):
    page = html.unescape((site / "reference" / "index.html").read_text())
    sections = dict(re.findall(r'<h2 id="([a-z-]+)">(.*?)(?=<h2 id=|\Z)', page, flags=re.S))
    leaves = []
    for name in _commands():
        subs = _commands(name) if name in ("index", "toy", "convert", "labels") else []
        leaves += [(name, s) for s in subs] or [(name,)]
    assert len(leaves) >= 20
    for path in leaves:
        code, out, err = run(*path, "--help", env_extra=WIDE)
        assert code == 0, err
        section = sections.get("-".join(path))
        assert section is not None, f"no section for {' '.join(path)}"
        for option in set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out)) - {"--help"}:
            assert option in section, (path, option)


def test_readme_is_short_and_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link


def test_architecture_is_short_true_to_the_conventions_and_links_into_the_docs():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "70 internal error" in text and "copy_kind" in text
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert {"docs/layouts.md", "docs/internals.md", "docs/scale.md"} <= set(links)
    for link in links:
        assert (ROOT / link).is_file(), link
