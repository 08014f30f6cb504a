"""Reading the inputs: image folders, image/caption tables and caption files.

A *source* is a folder of images (recursive; ``photo.png`` may have a sidecar ``photo.txt``
caption) or a CSV/JSONL/Parquet table with an image-path column and a caption column.
Unreadable images are never fatal here: callers get them back as ``skipped`` rows.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from imgextract.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".jsonl", ".json", ".parquet"}
PATH_COLUMNS = ("path", "image_path", "image", "file", "filepath", "file_name", "train_path")
CAPTION_COLUMNS = ("caption", "text", "prompt")
ID_COLUMNS = ("caption_id", "id")


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
        records = []
        for p in sorted(source.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                side = p.with_suffix(".txt")
                caption = side.read_text(encoding="utf-8").strip() if side.is_file() else None
                records.append(ImageRecord(p.resolve(), caption, {}))
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


RESERVED_INDEX_COLUMNS = {"id", "path", "caption", "sha256", "width", "height", "phash", "dhash", "whash"}


def open_rgb(path: Path, data: bytes | None = None) -> Image.Image:
    """Open an image fully as RGB, or raise ``BadImage`` saying why.

    ``data``: the file's bytes when the caller already read them (to hash them), so the file
    is read once.
    """
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, im).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImage(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc


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


def read_captions(path: Path, caption_column: str | None = None) -> pa.Table:
    """Captions to sample: ``.txt`` (one per line) or a table with a caption column.

    Returns a table with ``caption_id`` (string), ``caption``, ``train_path`` (nullable:
    the training image the caption belongs to) and ``copies`` (nullable: how often that
    image was in the training set, when known).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"caption file {path} does not exist",
                         "pass a .txt file (one caption per line) or a CSV/JSONL/Parquet table")
    if path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        captions = [ln for ln in lines if ln]
        ids = [str(i) for i in range(len(captions))]
        train = [None] * len(captions)
        copies = [None] * len(captions)
    else:
        table = read_table(path)
        ccol = pick_column(table, CAPTION_COLUMNS, caption_column, "caption", path)
        icol = pick_column(table, ID_COLUMNS, None, "id", path, required=False)
        pcol = pick_column(table, PATH_COLUMNS, None, "image", path, required=False)
        kcol = "copies" if "copies" in table.column_names else None
        mask = pc.invert(pc.is_null(table[ccol]))
        table = table.filter(mask)
        captions = [str(c).strip() for c in table[ccol].to_pylist()]
        keep = [i for i, c in enumerate(captions) if c]
        captions = [captions[i] for i in keep]
        ids = ([str(table[icol][i].as_py()) for i in keep] if icol else [str(i) for i in range(len(keep))])
        train = ([str((path.parent / str(table[pcol][i].as_py())).resolve()) for i in keep] if pcol
                 else [None] * len(keep))
        copies = [int(table[kcol][i].as_py()) for i in keep] if kcol else [None] * len(keep)
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
