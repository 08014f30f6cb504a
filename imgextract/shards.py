"""Training sets as img2dataset writes them: shards read in place, never extracted.

img2dataset's output folder holds, per shard ``NNNNN``: ``NNNNN.parquet`` (one row per input
row: url, caption, key, status, error_message, width, height, original_width/height, exif,
sha256 of the download, plus ``save_additional_columns`` such as LICENSE), ``NNNNN_stats.json``
(written last: a shard without it is still being written) and the images, in one of three
output formats:

* ``webdataset``: ``NNNNN.tar`` with members ``KEY.jpg|png|webp``, ``KEY.txt``, ``KEY.json``;
* ``files``: a folder ``NNNNN/`` with the same members as files;
* ``parquet``: the image bytes in a binary column of the parquet named after the format.

A training image is named by a *locator*, a string that every stage opens through
:func:`read_bytes` (``sources.open_rgb`` does it for them): a plain path for ``files``;
``SHARD.tar::OFFSET+SIZE`` for a tar member (found by one walk of the tar headers,
``TarInfo.offset_data``, then one seek per read); ``SHARD.parquet::COLUMN@ROW`` for a parquet
cell. Only ``status == "success"`` rows become images; the others are counted per status.
"""

from __future__ import annotations

import json
import tarfile
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from imgextract.errors import InputError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SEP = "::"
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


def tar_members(tar: Path) -> dict[str, tuple[int, int, str]]:
    """KEY → (offset of its image bytes, size, extension): one pass over the tar headers."""
    found = {}
    with tarfile.open(tar, "r:") as tf:
        for m in tf:
            stem, _, ext = m.name.rpartition(".")
            if m.isfile() and ext.lower() in IMAGE_EXTS:
                found[Path(stem).name] = (m.offset_data, m.size, ext.lower())
    return found


def shard_records(shard: Shard, fmt: str) -> tuple[list, Counter]:
    """The success rows of one shard as image records (locator paths), and every row's status count."""
    from imgextract.sources import ImageRecord
    names = pq.read_schema(shard.table).names
    table = pq.read_table(shard.table, columns=[c for c in names if c not in IMAGE_EXTS]).to_pandas()
    statuses = Counter(str(s) for s in table["status"])
    ok = table[table["status"] == "success"]
    members = tar_members(shard.images) if fmt == "webdataset" and shard.images.is_file() else {}
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
        records.append(ImageRecord(Path(locator), None if caption is None else str(caption), extra))
    return records, statuses


def is_locator(path) -> bool:
    from imgextract.fetch import is_url
    return SEP in str(path) or is_url(path)


_parquet_cache: OrderedDict = OrderedDict()
_parquet_lock = threading.Lock()


def read_bytes(locator) -> bytes:
    """The bytes a locator names: a tar member by offset (one seek), a parquet cell, or a file."""
    text = str(locator)
    from imgextract import fetch
    if fetch.is_url(text):
        return fetch.get(text)
    if SEP not in text:
        return Path(text).read_bytes()
    file, _, where = text.partition(SEP)
    if file.endswith(".tar"):
        off, _, size = where.partition("+")
        with open(file, "rb") as f:
            f.seek(int(off))
            data = f.read(int(size))
        if len(data) != int(size):
            raise OSError(f"{file} is shorter than its index says (truncated shard?)")
        return data
    if file.endswith(".parquet"):
        column, _, row = where.partition("@")
        return _parquet_cell(Path(file), column, int(row))
    raise InputError(f"unknown image locator {text!r}", "rebuild the index")


def _parquet_cell(file: Path, column: str, row: int) -> bytes:
    """One cell, reading (and keeping a few of) the row groups it lives in."""
    starts = _row_group_starts(str(file))
    rg = int(np.searchsorted(starts, row, side="right")) - 1
    if not 0 <= row < starts[-1]:
        raise OSError(f"{file} has no row {row}")
    key = (str(file), column, rg)
    with _parquet_lock:
        values = _parquet_cache.get(key)
    if values is None:
        values = pq.ParquetFile(file).read_row_group(rg, columns=[column]).column(0).to_pylist()
        with _parquet_lock:
            _parquet_cache[key] = values
            while len(_parquet_cache) > 8:
                _parquet_cache.popitem(last=False)
    return values[row - starts[rg]]


@lru_cache(maxsize=256)
def _row_group_starts(file: str) -> np.ndarray:
    """First row of each row group, and the total row count last."""
    meta = pq.ParquetFile(file).metadata
    return np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])


def stats_line(statuses: Counter) -> str:
    return ", ".join(f"{n} {s}" for s, n in statuses.most_common())


def read_stats(shard: Shard) -> dict:
    try:
        return json.loads((shard.table.parent / f"{shard.name}_stats.json").read_text())
    except (OSError, ValueError):
        return {}


# -- precomputed embeddings, as clip-retrieval's `clip inference` (and LAION's releases) lay them out --

def embedding_parts(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, img_emb/img_emb_N.npy, metadata/metadata_N.parquet) in the order autofaiss reads them
    (lexicographic file names), so an index id is the row in that concatenation."""
    folder = Path(folder)
    emb = sorted((folder / "img_emb").glob("img_emb_*.npy"), key=lambda p: p.name)
    if not emb:
        raise InputError(f"{folder} has no img_emb/img_emb_N.npy",
                         "pass the output folder of `clip-retrieval inference` (img_emb/ and metadata/)")
    out = []
    for e in emb:
        n = e.stem.removeprefix("img_emb_")
        meta = folder / "metadata" / f"metadata_{n}.parquet"
        if not meta.is_file():
            raise InputError(f"{e} has no metadata part {meta}", "every img_emb_N.npy needs metadata/metadata_N.parquet")
        out.append((n, e, meta))
    return out


def key_locators(images: Path) -> dict[str, str]:
    """img2dataset key → locator of its image, for every finished shard of an img2dataset folder."""
    fmt = detect(images)
    if fmt is None:
        raise InputError(f"--images {images} is not an img2dataset output folder",
                         "pass the folder img2dataset wrote (NNNNN.parquet + tars, folders or image columns)")
    found = {}
    for shard in list_shards(images, fmt):
        if shard.finished:
            for rec in shard_records(shard, fmt)[0]:
                found[str(rec.extra["key"])] = str(rec.path)
    return found


def embedding_rows(meta: Path, keys: dict[str, str] | None) -> tuple[list[dict], Counter]:
    """Index rows for one metadata part: where each image's pixels are, if anywhere (an
    img2dataset key of ``--images``, a local file, else the row's URL, fetched on demand)."""
    from imgextract import fetch
    table = pq.read_table(meta).to_pandas()
    rows, counts = [], Counter()
    for row in table.to_dict("records"):
        ref = row.pop("image_path", None)
        caption = row.pop("caption", None)
        path = None
        url = row.get("url")
        if ref is not None and keys is not None and str(ref) in keys:
            path = keys[str(ref)]
        elif ref is not None and keys is None and Path(str(ref)).is_file():
            path = str(Path(str(ref)).resolve())
        elif isinstance(url, str) and fetch.is_url(url):
            path = url  # fetched on demand when a scan or guard needs it
        counts["pixels by URL (fetched on demand)" if path and fetch.is_url(path)
               else "pixels available" if path else "pixels unavailable"] += 1
        rows.append({"path": path or "", "caption": None if caption is None else str(caption),
                     "image_path": None if ref is None else str(ref),
                     "pixels": "available" if path else "unavailable",
                     "sha256": None, "width": None, "height": None, "phash": None, "dhash": None, "whash": None,
                     **{RENAMED.get(k, k): v for k, v in row.items()}})
    return rows, counts


def embeddings_plan(folder: Path, images: Path | None, embedder):
    """clip-retrieval output as build parts: vectors as given (re-normalised), rows from the metadata,
    pixels located through an img2dataset folder (``images``) or local paths when they exist."""
    from imgextract.sources import SourcePart, SourcePlan
    parts = embedding_parts(folder)
    keys = key_locators(Path(images)) if images is not None else None

    shapes = {e: np.load(e, mmap_mode="r").shape for _, e, _ in parts}  # headers only: checked before any work
    for emb, shape in shapes.items():
        if len(shape) != 2 or shape[1] != embedder.dim:
            raise InputError(f"{emb} holds vectors of shape {shape}, not (n, {embedder.dim}) as "
                             f"{embedder.spec} makes", "name the model that made these embeddings with --embedder")

    def load(emb: Path, meta: Path) -> dict:
        vectors = np.load(emb).astype(np.float32)
        rows, counts = embedding_rows(meta, keys)
        if len(rows) != len(vectors):
            raise InputError(f"{emb} has {len(vectors)} vectors but {meta} has {len(rows)} rows",
                             "row j of metadata_N.parquet must describe row j of img_emb_N.npy")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return {"rows": rows, "vectors": vectors / np.maximum(norms, 1e-12), "statuses": counts}

    return SourcePlan("embeddings", [SourcePart(n, (lambda e=e, m=m: load(e, m)), int(shapes[e][0]))
                                     for n, e, m in parts], [])
