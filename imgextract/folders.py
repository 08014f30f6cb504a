"""Which folders imgextract may write into or delete: only those it provably made.

A folder imgextract creates to work in carries the marker file ``.imgextract-temp``; deletion
goes through :func:`remove_own`, which checks the marker on the folder (or the folder holding
it) and refuses links and anything resolving outside it. A finished folder replaces an old one
through :func:`replace_dir`: the old one is moved aside, marked, and deleted last.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from imgextract import rundir
from imgextract.errors import InputError

TEMP_MARKER = ".imgextract-temp"


OUTPUT_MARKER = ".imgextract-output"


def check_out_folder(out: Path, what: str = "--out") -> None:
    """An output folder must be new, empty, or imgextract's own (its output marker, a run's run.json,
    an index's embedder.json): files of the same names that imgextract did not write are never replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{what} {out} is a file", "name a folder (it is created if missing)")
    if out.is_dir() and not is_own_output(out):
        try:   # imgextract's own lock files (a writer that is just starting) do not make a folder foreign
            empty = all(p.name.startswith(".imgextract") for p in out.iterdir())
        except OSError as exc:
            raise InputError(f"{what} {out} cannot be read ({exc.strerror})", "name a folder you can write") from None
        if not empty:
            raise InputError(f"{what} {out} is a folder imgextract did not make (not empty, and no {OUTPUT_MARKER}, "
                             "run.json or embedder.json in it)",
                             "name a new or empty folder: imgextract never writes over files it did not create")


def is_own_output(out: Path) -> bool:
    out = Path(out)
    if out.is_symlink():
        return False
    if (out / OUTPUT_MARKER).is_file() or (out / "embedder.json").is_file():
        return True
    return rundir.is_imgextract_run(out)


def claim_out_folder(out: Path, what: str = "--out") -> Path:
    """Check ``out`` (:func:`check_out_folder`), create it, and mark it as imgextract's output."""
    check_out_folder(out, what)
    return mark_output(out)


def mark_output(out: Path) -> Path:
    """Create ``out`` if need be and mark it as imgextract's output folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / OUTPUT_MARKER).is_file():
        (out / OUTPUT_MARKER).write_text("an output folder of imgextract: it may write and replace its own files here\n")
    return out


def remove_own(path: Path, root: Path) -> None:
    """Delete ``path`` only when it is provably imgextract's: ``root`` (``path`` itself or a folder
    holding it) carries the temp marker, and neither is a link or resolves outside ``root``."""
    path, root = Path(path), Path(root)
    if path.is_symlink() or root.is_symlink() or not (root / TEMP_MARKER).is_file():
        raise InputError(f"{path} is not a folder imgextract made (no {TEMP_MARKER} in {root}); refusing to delete it",
                         "move it away, then run again")
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        raise InputError(f"{path} resolves outside {root}; refusing to delete it", "move it away, then run again")
    shutil.rmtree(real)


def own_temp_dir(dest: Path) -> Path:
    """A fresh ``.NAME.tmp`` beside ``dest``; a leftover is removed only if it carries our marker."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists() or tmp.is_symlink():
        if tmp.is_symlink() or not (tmp / TEMP_MARKER).is_file():
            raise InputError(f"{tmp} exists and was not made by imgextract", "move it away, then run again")
        remove_own(tmp, tmp)
    tmp.mkdir(parents=True)
    (tmp / TEMP_MARKER).write_text("temporary folder of imgextract; safe to delete\n")
    return tmp


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished temp folder into place; the old one (checked to be ours) goes last."""
    (tmp / TEMP_MARKER).unlink()
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists() or old.is_symlink():
            remove_own(old, old)
        dest.rename(old)
        (old / TEMP_MARKER).write_text("previous version, being removed\n")
    tmp.rename(dest)
    if old is not None:
        remove_own(old, old)
