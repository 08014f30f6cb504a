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
from tqdm.auto import tqdm

from imgextract import hashes
from imgextract.embedders import Embedder, load_embedder
from imgextract.errors import InputError
from imgextract.sources import BadImage, list_images, open_rgb

INDEX_DIR_ENV = "IMGEXTRACT_INDEX_DIR"


def index_root() -> Path:
    return Path(os.environ.get(INDEX_DIR_ENV, "indexes"))


def resolve_index(name_or_path: str | Path) -> Path:
    """A name resolves under the index root; anything path-like is taken as a path."""
    text = str(name_or_path)
    if os.sep in text or "/" in text or Path(text).is_dir():
        return Path(text)
    return index_root() / text


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
        raise InputError(f"index '{name_or_path}' not found at {path}",
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
    if dest.exists() and not overwrite:
        raise InputError(f"index {dest} already exists", "pass --overwrite to rebuild it, or choose another --name")
    records = list_images(Path(source), image_column, caption_column)
    embedder = load_embedder(embedder_spec, device)
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    skipped: list[dict] = []
    bar = tqdm(total=len(records), desc=f"index {dest.name}", unit="img", disable=not progress)
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
        bar.update(len(batch))
    bar.close()
    if not rows:
        raise InputError(f"no readable image in {source} ({len(skipped)} skipped)",
                         "check the files: see the skipped list above")
    matrix = np.concatenate(vectors).astype(np.float32)
    index = faiss.index_factory(matrix.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(matrix)
    index.add(matrix)

    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    faiss.write_index(index, str(tmp / "index.faiss"))
    pq.write_table(pa.Table.from_pylist(rows), tmp / "images.parquet")
    record = {**embedder.record(), "faiss_factory": factory, "source": str(Path(source).resolve())}
    (tmp / "embedder.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    (tmp / "skipped.json").write_text(json.dumps(skipped, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return BuildResult(dest, len(rows), skipped)


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
