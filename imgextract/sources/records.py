"""What every source form is read into: records (an image before it is opened) grouped in parts.

A part is the unit an index build resumes at: an img2dataset shard, a clip-retrieval
embeddings part, or ``PART_SIZE`` images of a folder or table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source, before it is opened."""

    path: Path
    caption: str | None
    extra: dict
    locator: bool = False     # ``path`` is a locator the source wrote (a tar member, a parquet cell), never
                              # a user's path: a file named ``holiday::2019.png`` stays a file
    problem: str | None = None   # why it cannot be read (a broken link, a link out of the folder): listed, not opened
    mask: Path | None = None     # a published template's mask (sources.templates): white where it is compared


PART_SIZE = 4096  # images per build part of a folder or table: the unit an interrupted build resumes at


@dataclass
class SourcePart:
    """A unit of an index build: an img2dataset shard, or PART_SIZE images of a folder or table."""

    name: str
    load: object          # () -> (records, status Counter)
    size: int = 0         # images expected (for the progress bar in images/s)


@dataclass
class SourcePlan:
    kind: str             # folder | table | img2dataset-{webdataset,files,parquet} | embeddings
    parts: list
    notes: list


class BadPart(Exception):
    """A part that cannot be read at all (a truncated tar, a shard without its columns): listed in
    ``skipped.json`` with the reason, and the rest of the source is built."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")
