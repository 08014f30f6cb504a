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
