"""Reading the inputs: image folders, image/caption tables and caption files.

A *source* is a folder of images (recursive; ``photo.png`` may have a sidecar ``photo.txt``
caption) or a CSV/JSONL/Parquet table with an image-path column and a caption column.
Unreadable images are never fatal here: callers get them back as ``skipped`` rows.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgextract.errors import InputError

log = logging.getLogger("imgextract")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".jsonl", ".json", ".parquet"}
PATH_COLUMNS = ("path", "image_path", "image", "file", "filepath", "file_name", "train_path")
CAPTION_COLUMNS = ("caption", "text", "prompt")
ID_COLUMNS = ("caption_id", "id")
SOURCE_COLUMNS = ("url", "source", "source_url")        # where a training image came from
LICENSE_COLUMNS = ("license", "licence", "license_url", "rights")  # img2dataset writes LICENSE


def role_column(columns, candidates: tuple[str, ...]) -> str | None:
    """The first column playing a role, matched case-insensitively (LICENSE, License, license)."""
    names = {str(c).lower(): c for c in columns}
    return next((names[c] for c in candidates if c in names), None)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a source, before it is opened."""

    path: Path
    caption: str | None
    extra: dict


def read_table(path: Path) -> pa.Table:
    """Read a CSV, JSONL or Parquet table; the suffix decides the format."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pacsv.read_csv(path)
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(path)
        if suffix == ".parquet":
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot parse table {path} ({first})",
                         "check that it is valid CSV, JSON Lines or Parquet") from exc
    raise InputError(f"{path} is not a table", f"use one of {sorted(TABLE_SUFFIXES)}")


def pick_column(table: pa.Table, candidates: tuple[str, ...], given: str | None,
                what: str, source: Path, required: bool = True) -> str | None:
    """Find the column that plays a role, by explicit name or by the usual names."""
    names = {n.lower(): n for n in table.column_names}
    if given:
        if given not in table.column_names:
            raise InputError(f"{source} has no column '{given}' (columns: {', '.join(table.column_names)})",
                             f"name the {what} column that exists")
        return given
    for cand in candidates:
        if cand in names:
            return names[cand]
    if required:
        raise InputError(
            f"{source} has no {what} column (looked for {', '.join(candidates)}; has {', '.join(table.column_names)})",
            f"rename the column or pass its name with --{what.replace(' ', '-')}-column")
    return None


def list_images(source: Path, image_column: str | None = None,
                caption_column: str | None = None) -> list[ImageRecord]:
    """All images a source names, in a stable order. Does not open them."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"image source {source} does not exist",
                         "pass a folder of images or a CSV/JSONL/Parquet table of image paths")
    if source.is_dir():
        files, bad = list_image_files(source)
        records = [ImageRecord(p, _sidecar(p), {}) for p in files]
        records += [ImageRecord(Path(b["path"]), None, {}) for b in bad]  # opened later, listed as skipped
        if not records:
            raise InputError(f"folder {source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                             "point at the folder that contains the training images")
        return records
    if source.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"image source {source} is neither a folder nor a table",
                         f"pass a folder or a table ({', '.join(sorted(TABLE_SUFFIXES))})")
    table = read_table(source)
    if table.num_rows == 0:
        raise InputError(f"table {source} has no rows", "give a table with one row per image")
    if image_column is None and not any(c.lower() in PATH_COLUMNS for c in table.column_names) \
            and role_column(table.column_names, ("url",)):
        raise InputError(f"table {source} names its images by URL only (no path column)",
                         "download them with img2dataset and index its output folder, or index the set's "
                         "precomputed embeddings with --embeddings (candidates' URLs are then fetched on demand)")
    pcol = pick_column(table, PATH_COLUMNS, image_column, "image", source)
    ccol = pick_column(table, CAPTION_COLUMNS, caption_column, "caption", source, required=False)
    rows = table.to_pylist()
    records = []
    for row in rows:
        raw = Path(str(row.pop(pcol)))
        path = raw if raw.is_absolute() else (source.parent / raw)
        caption = row.pop(ccol) if ccol else None
        extra = {k: v for k, v in row.items() if k not in RESERVED_INDEX_COLUMNS}
        records.append(ImageRecord(path.resolve(), None if caption is None else str(caption), extra))
    return records


def _sidecar(image: Path) -> str | None:
    side = image.with_suffix(".txt")
    if not side.is_file():
        return None
    return side.read_bytes().decode("utf-8", errors="replace").strip() or None


RESERVED_INDEX_COLUMNS = {"id", "path", "caption", "sha256", "width", "height", "phash", "dhash", "whash"}


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


def plan_source(source: Path, image_column: str | None = None, caption_column: str | None = None, *,
                embeddings: bool = False, images: Path | None = None, embedder=None) -> SourcePlan:
    """Which form ``source`` is in, and its parts in a stable order (the one place a form maps to a reader).

    ``embeddings``: SOURCE is clip-retrieval output whose vectors ``embedder`` made; ``images``
    then names the img2dataset folder holding their pixels."""
    from collections import Counter

    from imgextract import shards
    source = Path(source)
    if embeddings:
        return shards.embeddings_plan(source, images, embedder)
    if images is not None:
        raise InputError("--images goes with --embeddings", "pass --embeddings when SOURCE holds precomputed vectors")
    fmt = shards.detect(source)
    if fmt is not None:
        all_shards = shards.list_shards(source, fmt)
        ready = [s for s in all_shards if s.finished]
        notes = [f"skipped shard {s.name}: still being written by img2dataset (no {s.name}_stats.json yet)"
                 for s in all_shards if not s.finished]
        if not ready:
            raise InputError(f"img2dataset folder {source} has no finished shard ({len(all_shards)} being written)",
                             "wait for img2dataset to finish a shard (it writes NNNNN_stats.json last)")
        parts = [SourcePart(s.name, (lambda s=s: shards.shard_records(s, fmt)),
                            int(shards.read_stats(s).get("successes", 0))) for s in ready]
        return SourcePlan(f"img2dataset-{fmt}", parts, notes)
    records = list_images(source, image_column, caption_column)
    kind = "folder" if source.is_dir() else "table"
    parts = [SourcePart(f"{i // PART_SIZE:05d}", (lambda chunk=records[i:i + PART_SIZE]: (chunk, Counter())),
                        len(records[i:i + PART_SIZE])) for i in range(0, len(records), PART_SIZE)]
    return SourcePlan(kind, parts, [])


MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb limit


def open_rgb(path: Path, data: bytes | None = None, min_side: int = 1) -> Image.Image:
    """Open an image fully as 8-bit RGB, upright, or raise ``BadImage`` saying why.

    The one place every image is opened, so every stage treats odd files alike: EXIF
    orientation applied, 16-bit grey scaled (not clipped), alpha flattened on white, the
    first frame of an animation, bomb-sized images refused before a byte is decoded, and
    images smaller than ``min_side`` (a tile grid that cannot fit) refused.
    ``data``: the file's bytes when the caller already read them (to hash them).
    ``path`` may be a shard locator (``SHARD.tar::OFFSET+SIZE``, see :mod:`imgextract.shards`).
    """
    from imgextract import shards
    if data is None and shards.is_locator(path):
        try:
            data = shards.read_bytes(path)
        except OSError as exc:
            raise BadImage(path, _reason(exc)) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(path, f"{im.width * im.height:,} pixels ({im.width}x{im.height}) is over the {MAX_PIXELS:,}-pixel safety "
                                         "limit (decompression bomb); downscale it first")
                if min(im.size) < min_side:
                    raise BadImage(path, f"{im.width}x{im.height} pixels is too small for a "
                                         f"{min_side}x{min_side} tile grid")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses > 2x the limit at open, before we can look
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "its size"
        raise BadImage(path, f"{size} is over the {MAX_PIXELS:,}-pixel safety limit (decompression bomb); "
                             "downscale it first") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as exc:
        raise BadImage(path, _reason(exc)) from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (unknown format, empty or corrupt file)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grey: scale to 8 bits instead of clipping
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and arr.max(initial=0) <= 1.0 else (255.0 if arr.max(initial=0) <= 255 else 65535.0)
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "P", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def list_image_files(folder: Path) -> tuple[list[Path], list[dict]]:
    """Image files under ``folder`` (recursive, sorted, resolved) and the entries that cannot be
    images: broken links and symlink loops are listed with a reason, never silently dropped."""
    files, skipped = [], []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.is_file():
            files.append(p.resolve())
        elif p.is_symlink():
            skipped.append({"path": str(p.absolute()), "reason": "symlink loop or broken link"})
    return files, skipped


class BadImage(Exception):
    """An image inside a batch that cannot be read: listed and skipped, never fatal."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _utf8_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"caption file {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line})",
                         f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > captions.txt") from exc


def _column(table: pa.Table, col: str, path: Path, what: str) -> list:
    """A column as Python values, refusing types that would become nonsense prompts or ids."""
    typ = table.schema.field(col).type
    values = table[col].to_pylist()
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        row = next((i for i, v in enumerate(values) if v is not None and not _is_utf8(v)), 0)
        raise InputError(f"{path}: column '{col}' is not UTF-8 text (row {row + 1})",
                         f"re-save the table as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name}")
    if pa.types.is_nested(typ):
        row = next((i for i, v in enumerate(values) if v is not None), 0)
        raise InputError(f"{path}: {what} column '{col}' holds lists (row {row + 1}: {str(values[row])[:60]})",
                         f"give one {what} per row (join or explode the lists first)")
    return values


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def read_captions(path: Path, caption_column: str | None = None) -> pa.Table:
    """Captions to sample: ``.txt`` (one per line) or a table with a caption column.

    Returns a table with ``caption_id`` (string), ``caption``, ``train_path`` (nullable:
    the training image the caption belongs to) and ``copies`` (nullable: how often that
    image was in the training set, when known). A value that would become a nonsense prompt
    (lists, non-UTF-8 bytes, a caption spanning lines from an unclosed quote) or a bad id or
    copy count is an error naming the row; empty captions are skipped with a counted warning.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"caption file {path} does not exist",
                         "pass a .txt file (one caption per line) or a CSV/JSONL/Parquet table")
    if path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in _utf8_text(path).splitlines()]
        rows = [i for i, ln in enumerate(lines) if ln]
        captions = [lines[i] for i in rows]
        ids = [str(i) for i in range(len(captions))]
        train = [None] * len(captions)
        copies = [None] * len(captions)
    else:
        table = read_table(path)
        ccol = pick_column(table, CAPTION_COLUMNS, caption_column, "caption", path)
        icol = pick_column(table, ID_COLUMNS, None, "id", path, required=False)
        pcol = pick_column(table, PATH_COLUMNS, None, "image", path, required=False)
        kcol = "copies" if "copies" in table.column_names else None
        raw = _column(table, ccol, path, "caption")
        for i, c in enumerate(raw):
            if isinstance(c, str) and ("\n" in c or "\r" in c):
                raise InputError(f"{path}: the caption in row {i + 1} spans several lines (an unclosed quote?)",
                                 "close the quote, or remove line breaks inside captions")
        stripped = ["" if c is None else str(c).strip() for c in raw]
        rows = [i for i, c in enumerate(stripped) if c]
        captions = [stripped[i] for i in rows]
        if icol:
            id_values = _column(table, icol, path, "id")
            null = next((i for i in rows if id_values[i] is None or
                         (isinstance(id_values[i], float) and np.isnan(id_values[i]))), None)
            if null is not None:
                raise InputError(f"{path}: column '{icol}' is empty in row {null + 1}",
                                 "give every caption an id, or drop the column to number captions by row")
            ids = [str(id_values[i]) for i in rows]
        else:
            ids = [str(n) for n in range(len(rows))]
        train = [str((path.parent / str(table[pcol][i].as_py())).resolve())
                 if table[pcol][i].as_py() is not None else None for i in rows] if pcol else [None] * len(rows)
        copies = [_copies(v, i, path) for i, v in zip(rows, (_column(table, kcol, path, "copies")[i] for i in rows))] \
            if kcol else [None] * len(rows)
        empty = len(stripped) - len(rows)
        if empty:
            first = [i + 1 for i, c in enumerate(stripped) if not c][:5]
            log.warning("%s: skipped %d empty caption(s) (rows %s%s)", path, empty,
                        ", ".join(map(str, first)), ", ..." if empty > 5 else "")
    if not captions:
        raise InputError(f"caption file {path} holds no captions",
                         "put one caption per line (.txt) or give a table with a non-empty 'caption' column")
    if len(set(ids)) != len(ids):
        raise InputError(f"caption file {path} repeats caption ids",
                         "make the id column unique, or drop it to number captions by row")
    return pa.table({
        "caption_id": pa.array(ids, pa.string()),
        "caption": pa.array(captions, pa.string()),
        "train_path": pa.array(train, pa.string()),
        "copies": pa.array(copies, pa.int64()),
    })


def _copies(value, row: int, path: Path) -> int | None:
    """A copy count must be a whole number >= 1 (or empty): '3' is fine, 'many' or 2.5 are not."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        n = float(str(value).strip())
    except ValueError:
        n = float("nan")
    if not np.isfinite(n) or n != int(n) or n < 1:
        raise InputError(f"{path}: 'copies' in row {row + 1} is {value!r}, not a whole number >= 1",
                         "write each copy count as a number like 3, or leave it empty")
    return int(n)
