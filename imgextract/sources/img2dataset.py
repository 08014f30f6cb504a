"""Training sets as img2dataset writes them: shards read in place, never extracted.

img2dataset's output folder holds, per shard ``NNNNN``: ``NNNNN.parquet`` (one row per input
row: url, caption, key, status, error_message, width, height, original_width/height, exif,
sha256 of the download, plus ``save_additional_columns`` such as LICENSE), ``NNNNN_stats.json``
(written last: a shard without it is still being written) and the images, in one of three
output formats:

* ``webdataset``: ``NNNNN.tar`` with members ``KEY.jpg|png|webp``, ``KEY.txt``, ``KEY.json``;
* ``files``: a folder ``NNNNN/`` with the same members as files;
* ``parquet``: the image bytes in a binary column of the parquet named after the format.

A training image is named by a *locator* (:mod:`imgextract.sources.locators`): a plain path
for ``files``, ``SHARD.tar::OFFSET+SIZE`` for a tar member, ``SHARD.parquet::COLUMN@ROW`` for a
parquet cell. Only ``status == "success"`` rows become images; the others are counted per status.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imgextract.errors import InputError
from imgextract.sources.locators import SEP
from imgextract.sources.records import BadPart, ImageRecord, SourcePart, SourcePlan


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

# img2dataset's bookkeeping columns that do not describe the image, and those renamed because
# the index computes its own (width/height/sha256 of the stored image, not of the download).
DROPPED = {"status", "error_message", "exif", "width", "height"}

RENAMED = {"sha256": "download_sha256"}


@dataclass
class Shard:
    name: str
    table: Path                       # NNNNN.parquet
    images: Path | None               # NNNNN.tar, NNNNN/ or None (bytes inside the parquet)
    finished: bool                    # NNNNN_stats.json exists


def detect(folder: Path) -> str | None:
    """``webdataset``, ``files`` or ``parquet`` for an img2dataset output folder, else None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    tables = sorted(p for p in folder.glob("*.parquet") if p.stem.isdigit())
    if not tables and not list(folder.glob("*_stats.json")):
        return None
    if not tables:
        return "webdataset" if list(folder.glob("*.tar")) else None
    try:
        cols = set(pq.read_schema(tables[0]).names)
    except Exception:  # noqa: BLE001 - not a parquet we can read: not img2dataset output
        return None
    if not {"key", "status"} <= cols:
        return None
    if any((folder / f"{t.stem}.tar").is_file() for t in tables):
        return "webdataset"
    if any((folder / t.stem).is_dir() for t in tables):
        return "files"
    if cols & set(IMAGE_EXTS):
        return "parquet"
    return None


def list_shards(folder: Path, fmt: str) -> list[Shard]:
    folder = Path(folder).resolve()
    out = []
    for table in sorted(p for p in folder.glob("*.parquet") if p.stem.isdigit()):
        images = {"webdataset": folder / f"{table.stem}.tar", "files": folder / table.stem, "parquet": None}[fmt]
        out.append(Shard(table.stem, table, images, (folder / f"{table.stem}_stats.json").is_file()))
    return out


def tar_members(tar: Path, statuses: Counter | None = None) -> dict[str, tuple[int, int, str]]:
    """KEY → (offset of its image bytes, size, extension): one pass over the tar headers. A member
    whose header claims bytes past the end of the file (forged or truncated) is counted, not kept."""
    found = {}
    end = Path(tar).stat().st_size
    check_headers(tar, end)   # before tarfile, which would read whatever a forged pax header claims
    with tarfile.open(tar, "r:") as tf:
        for m in tf:
            stem, _, ext = m.name.rpartition(".")
            if m.isfile() and ext.lower() in IMAGE_EXTS:
                if m.offset_data + m.size > end:
                    if statuses is not None:
                        statuses["member past the end of the tar"] += 1
                    continue
                found[Path(stem).name] = (m.offset_data, m.size, ext.lower())
    return found


def check_headers(tar: Path, end: int) -> None:
    """Walk the 512-byte headers of a tar: every member, pax and long-name entries included, must
    end inside the file. A header claiming more (10^12 bytes) is a forged or truncated shard."""
    pos = 0
    with open(tar, "rb") as f:
        while pos + 512 <= end:
            f.seek(pos)
            head = f.read(512)
            if head.count(0) == 512:
                return
            field = head[124:136]
            if field[0] & 0x80:                        # GNU base-256 for sizes over 8 GiB
                size = int.from_bytes(field[1:], "big")
            else:
                text = field.rstrip(b"\0 ").strip()
                size = int(text, 8) if text else 0    # ValueError: not a tar header
            if pos + 512 + size > end:
                raise ValueError(f"a tar header at byte {pos} claims {size:,} bytes past the end of the file")
            pos += 512 + -(-size // 512) * 512


def shard_records(shard: Shard, fmt: str) -> tuple[list, Counter]:
    """The success rows of one shard as image records (locator paths), and every row's status count."""
    names = pq.read_schema(shard.table).names
    table = pq.read_table(shard.table, columns=[c for c in names if c not in IMAGE_EXTS]).to_pandas()
    statuses = Counter(str(s) for s in table["status"])
    ok = table[table["status"] == "success"]
    members = tar_members(shard.images, statuses) if fmt == "webdataset" and shard.images.is_file() else {}
    image_col = next(c for c in IMAGE_EXTS if c in names) if fmt == "parquet" else None
    records = []
    for row_i, row in zip(ok.index, ok.to_dict("records")):
        key = str(row["key"])
        if fmt == "webdataset":
            if key not in members:
                statuses["success but missing from the tar"] += 1
                continue
            off, size, _ = members[key]
            locator = f"{shard.images}{SEP}{off}+{size}"
        elif fmt == "files":
            hit = next((shard.images / f"{key}.{e}" for e in IMAGE_EXTS if (shard.images / f"{key}.{e}").is_file()), None)
            if hit is None:
                statuses["success but missing from the folder"] += 1
                continue
            locator = str(hit)
        else:
            locator = f"{shard.table}{SEP}{image_col}@{row_i}"
        caption = row.get("caption")
        extra = {RENAMED.get(k, k): v for k, v in row.items() if k not in DROPPED and k != "caption"}
        extra["shard"] = shard.name
        records.append(ImageRecord(Path(locator), None if caption is None else str(caption), extra,
                                   locator=fmt != "files"))
    return records, statuses


def stats_line(statuses: Counter) -> str:
    return ", ".join(f"{n} {s}" for s, n in statuses.most_common())


def read_stats(shard: Shard) -> dict:
    try:
        stats = json.loads((shard.table.parent / f"{shard.name}_stats.json").read_text())
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def expected_images(shard: Shard) -> int:
    """The shard's ``successes`` when its stats say so sanely (for the progress bar only), else 0."""
    n = read_stats(shard).get("successes", 0)
    return n if isinstance(n, int) and 0 <= n < 10**9 else 0


# what a shard written by someone else can throw at us: each makes the shard a listed, skipped part
SHARD_ERRORS = (tarfile.TarError, OSError, EOFError, KeyError, ValueError, TypeError, IndexError, pa.ArrowException)


def shard_part(shard: Shard, fmt: str) -> tuple[list, Counter]:
    try:
        return shard_records(shard, fmt)
    except SHARD_ERRORS as exc:
        raise BadPart(shard.table, f"bad shard {shard.name} ({type(exc).__name__}: {str(exc)[:200]}); "
                                   "skipped, the other shards are built") from exc


def key_locators(images: Path) -> dict[str, str]:
    """img2dataset key → locator of its image, for every finished shard of an img2dataset folder."""
    fmt = detect(images)
    if fmt is None:
        raise InputError(f"--images {images} is not an img2dataset output folder",
                         "pass the folder img2dataset wrote (NNNNN.parquet + tars, folders or image columns)")
    found = {}
    for shard in list_shards(images, fmt):
        if shard.finished:
            try:
                records = shard_part(shard, fmt)[0]
            except BadPart as bad:
                logging.getLogger("imgextract").warning("%s: %s", bad.path, bad.reason)
                continue
            for rec in records:
                found[str(rec.extra["key"])] = str(rec.path)
    return found


def plan(source: Path, fmt: str) -> SourcePlan:
    """One part per finished shard; a shard without its stats file is still being written: skipped, said."""
    all_shards = list_shards(source, fmt)
    ready = [s for s in all_shards if s.finished]
    notes = [f"skipped shard {s.name}: still being written by img2dataset (no {s.name}_stats.json yet)"
             for s in all_shards if not s.finished]
    if not ready:
        raise InputError(f"img2dataset folder {source} has no finished shard ({len(all_shards)} being written)",
                         "wait for img2dataset to finish a shard (it writes NNNNN_stats.json last)")
    parts = [SourcePart(s.name, (lambda s=s: shard_part(s, fmt)), expected_images(s)) for s in ready]
    return SourcePlan(f"img2dataset-{fmt}", parts, notes)
