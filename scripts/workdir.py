"""A benchmark's work folder: fresh, or one it made before (marked), never someone else's."""

from __future__ import annotations

import tempfile
from pathlib import Path

from imgextract.errors import InputError
from imgextract.folders import TEMP_MARKER


def bench_workdir(given: Path | None, prefix: str) -> Path:
    """A fresh temporary folder, or ``given`` when it is new, empty, or marked by an earlier run."""
    work = Path(given) if given else Path(tempfile.mkdtemp(prefix=prefix))
    if work.exists() and any(work.iterdir()) and not (work / TEMP_MARKER).is_file():
        raise InputError(f"--workdir {work} holds files imgextract did not put there", "give a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / TEMP_MARKER).write_text("benchmark folder of imgextract; safe to delete\n")
    return work
