"""Training-image indexes: a FAISS index plus the table of what it holds.

An index is a folder ``indexes/NAME/`` (or under ``$IMGEXTRACT_INDEX_DIR``)::

    index.faiss      inner-product FAISS index over L2-normalised embeddings
    images.parquet   id, path, caption, sha256, width, height, phash, dhash, whash, extra columns
    embedder.json    the embedder record (spec, dimension, preprocessing, weights fingerprint)
    skipped.json     unreadable images, listed with the reason

The folder is written under a temporary name and renamed, so a crash never leaves a
half-built index that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imgextract import hashes
from imgextract.embedders import Embedder, load_embedder
from imgextract.errors import InputError
from imgextract.locks import exclusive
from imgextract.sources import BadImage, list_images, open_rgb

INDEX_DIR_ENV = "IMGEXTRACT_INDEX_DIR"


def index_root() -> Path:
    return Path(os.environ.get(INDEX_DIR_ENV, "indexes"))


def resolve_index(name_or_path: str | Path) -> Path:
    """A bare name resolves under the index root, never elsewhere; anything with a slash is a path.

    ``""``, ``.`` and ``..`` are refused: they would name the root itself or a folder above it.
    """
    text = str(name_or_path)
    if text.strip() in ("", ".", ".."):
        raise InputError(f"index name {text!r} names no index",
                         "use a plain name like laion-subset (stored under the index root) or a path like ./idx")
    if os.sep in text or "/" in text:
        return Path(text).expanduser()
    return index_root() / text


MARKER = "embedder.json"


def is_index_dir(path: Path) -> bool:
    """Provably an imgextract index: a real folder whose embedder.json is an embedder record."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        record = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "spec" in record and "dimension" in record


def check_replaceable(dest: Path, overwrite: bool) -> None:
    """Refuse to touch a folder imgextract did not make (the contract of --overwrite)."""
    if not (dest.exists() or dest.is_symlink()):
        return
    if not overwrite:
        raise InputError(f"index {dest} already exists", "pass --overwrite to rebuild it, or choose another --name")
    if not is_index_dir(dest):
        raise InputError(f"{dest} exists and is not an imgextract index (no {MARKER} of one); refusing to replace it",
                         "choose another --name; --overwrite only replaces an index imgextract built")


@dataclass
class TrainingIndex:
    """An opened index: vectors in FAISS, rows in ``table`` (row i ↔ FAISS id i)."""

    path: Path
    faiss_index: faiss.Index
    table: pd.DataFrame
    embedder: dict

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows per query: (similarities, row ids), -1 where fewer than k exist."""
        k = min(k, self.faiss_index.ntotal)
        return self.faiss_index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)

    def load_embedder(self, device: str = "auto") -> Embedder:
        return load_embedder(self.embedder["spec"], device)


def open_index(name_or_path: str | Path, gpu: str = "auto") -> TrainingIndex:
    path = resolve_index(name_or_path)
    files = [path / "index.faiss", path / "images.parquet", path / "embedder.json"]
    if not path.is_dir():
        known = sorted(p.name for p in index_root().glob("*") if is_index_dir(p)) if index_root().is_dir() else []
        have = f"; indexes in {index_root()}: {', '.join(known[:10])}" if known else f"; {index_root()} holds no index"
        raise InputError(f"index '{name_or_path}' not found at {path}{have}",
                         f"build it with `imgextract index build SOURCE --name {Path(str(name_or_path)).name}` "
                         f"or set {INDEX_DIR_ENV}")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InputError(f"index folder {path} lacks {', '.join(missing)}",
                         "rebuild it with `imgextract index build`")
    index = faiss.read_index(str(path / "index.faiss"))
    if gpu != "off" and _faiss_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    table = pq.read_table(path / "images.parquet").to_pandas()
    embedder = json.loads((path / "embedder.json").read_text())
    if index.ntotal != len(table) or index.d != embedder.get("dimension"):
        raise InputError(f"index folder {path} is inconsistent ({index.ntotal} vectors of dim {index.d}, "
                         f"{len(table)} rows, embedder dim {embedder.get('dimension')})",
                         "rebuild it with `imgextract index build`")
    return TrainingIndex(path, index, table, embedder)


def _faiss_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class BuildResult:
    path: Path
    count: int
    skipped: list[dict]


def build_index(source: Path, name: str, embedder_spec: str = "pixel", *, batch_size: int = 64,
                overwrite: bool = False, image_column: str | None = None,
                caption_column: str | None = None, factory: str = "Flat",
                device: str = "auto", progress: bool = True) -> BuildResult:
    """Embed and hash every readable image of ``source`` into ``indexes/NAME``.

    Unreadable images are listed in ``skipped.json`` and in the result; the rest is indexed.
    """
    dest = resolve_index(name)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}", "give a positive number of images per batch")
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--name {name} names a file ({dest})", "choose a name that is a folder or does not exist")
    check_replaceable(dest, overwrite)
    embedder = load_embedder(embedder_spec, device)
    _check_factory(factory, embedder.dim)
    records = list_images(Path(source), image_column, caption_column)
    with exclusive(dest.with_name(f".{dest.name}.lock"), f"index {dest}"):
        check_replaceable(dest, overwrite)  # again, under the lock: another writer may have finished
        return _build(source, dest, records, embedder, batch_size, factory, progress)


def _check_factory(factory: str, dim: int) -> None:
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InputError(f"--factory {factory!r} is not a FAISS index_factory string for {dim}-d vectors",
                         "use e.g. Flat, HNSW32 or IVF256,Flat") from exc


def _build(source: Path, dest: Path, records: list, embedder: Embedder, batch_size: int, factory: str,
           progress: bool) -> BuildResult:
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    skipped: list[dict] = []
    from imgextract.engine import Progress
    bar = Progress(len(records), f"index {dest.name}", "img") if progress else None
    for batch in _chunks(records, batch_size):
        images, kept = [], []
        for rec in batch:
            try:
                data = rec.path.read_bytes()  # read once: hashed here, decoded by open_rgb
                images.append(open_rgb(rec.path, data))
                kept.append((rec, hashlib.sha256(data).hexdigest()))
            except OSError as exc:
                skipped.append({"path": str(rec.path), "reason": exc.strerror or type(exc).__name__})
            except BadImage as bad:
                skipped.append({"path": str(bad.path), "reason": bad.reason})
        if images:
            vectors.append(embedder.embed(images))
        for (rec, sha), im in zip(kept, images):
            rows.append({"id": len(rows), "path": str(rec.path), "caption": rec.caption,
                         "sha256": sha, "width": im.width, "height": im.height,
                         **hashes.image_hashes(im), **rec.extra})
        if bar:
            bar.update_to(bar.n + len(batch))
    if bar:
        bar.close()
    if not rows:
        raise InputError(f"no readable image in {source} ({len(skipped)} skipped)",
                         "check the files listed below",
                         details=[f"skipped {s['path']}: {s['reason']}" for s in skipped])
    matrix = np.concatenate(vectors).astype(np.float32)
    index = faiss.index_factory(matrix.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(matrix)
    index.add(matrix)

    tmp = own_temp_dir(dest)
    faiss.write_index(index, str(tmp / "index.faiss"))
    pq.write_table(pa.Table.from_pylist(rows), tmp / "images.parquet")
    record = {**embedder.record(), "imgextract_index": 1, "faiss_factory": factory, "source": str(Path(source).resolve())}
    (tmp / "embedder.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    (tmp / "skipped.json").write_text(json.dumps(skipped, indent=2))
    replace_dir(tmp, dest)
    return BuildResult(dest, len(rows), skipped)


TEMP_MARKER = ".imgextract-temp"


def own_temp_dir(dest: Path) -> Path:
    """A fresh ``.NAME.tmp`` beside ``dest``; a leftover is removed only if it carries our marker."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists() or tmp.is_symlink():
        if tmp.is_symlink() or not (tmp / TEMP_MARKER).is_file():
            raise InputError(f"{tmp} exists and was not made by imgextract", "move it away, then run again")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / TEMP_MARKER).write_text("temporary folder of imgextract; safe to delete\n")
    return tmp


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished temp folder into place; the old one (checked to be ours) goes last."""
    (tmp / TEMP_MARKER).unlink()
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            if not (old / TEMP_MARKER).is_file():
                raise InputError(f"{old} exists and was not made by imgextract", "move it away, then run again")
            shutil.rmtree(old)
        dest.rename(old)
        (old / TEMP_MARKER).write_text("previous version, being removed\n")
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old)


def check_embedder(index: TrainingIndex, spec: str) -> None:
    """Refuse to compare vectors of different embedders: they live in different spaces."""
    built = index.embedder.get("spec")
    wanted = spec
    if spec.startswith("clip:") and Path(spec[5:]).is_dir():
        wanted = f"clip:{Path(spec[5:]).resolve()}"
    if built != wanted:
        raise InputError(f"index {index.path} was built with embedder '{built}' "
                         f"(see {index.path / 'embedder.json'}), not '{spec}'",
                         f"rebuild it with `imgextract index build SOURCE --name NAME --embedder {spec}` "
                         "or drop --embedder to use the index's own")
