"""The one rule for weight files from strangers: safetensors load, pickles are refused.

A pickle (``.bin``, ``.ckpt`` inside a folder, ``.pt``, ...) runs code when it is loaded, so a
folder or file whose weights are only pickled is refused, with the command that converts it
once in a sandbox the user trusts. A pickle beside a ``.safetensors`` twin is harmless: the
loaders read the safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from imgextract.errors import InputError

PICKLE_SUFFIXES = {".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"}


def is_pickle(path: Path) -> bool:
    return Path(path).suffix in PICKLE_SUFFIXES


def unguarded_pickle(folder: Path) -> Path | None:
    """A pickled weight file in ``folder`` with no ``.safetensors`` beside it, if any."""
    files = [p for p in Path(folder).iterdir() if p.is_file()]
    pickles = [p for p in files if is_pickle(p)]
    if pickles and not any(p.suffix == ".safetensors" for p in files):
        return pickles[0]
    return None


def refuse(subject: str, weights: Path | str, remedy: str, twin: bool = False) -> NoReturn:
    raise InputError(f"{subject} was refused as unsafe: {weights} is a pickle (loading it can run code)"
                     + (" and has no .safetensors twin" if twin else ""), remedy)
