"""Training-image indexes: a FAISS index plus the table of what it holds.

An index is a folder ``indexes/NAME/`` (or under ``$IMGEXTRACT_INDEX_DIR``)::

    index.faiss      inner-product FAISS index over L2-normalised embeddings
    index.ivfdata    an IVF index's lists (codes and ids), memory-mapped; index.faiss refers to it
    vectors.f16      every vector as float16, memory-mapped, for exact re-ranking
    images.parquet   id, path, caption, sha256, width, height, phash, dhash, whash (null unless
                     built with --hashes), extra columns
    embedder.json    the embedder record (spec, dimension, preprocessing, weights fingerprint)
    skipped.json     unreadable images, listed with the reason
    thumbs/HxW.f16   box thumbnails (float16, rows of by×bx×3 block means) of the training
                     images as fitted to H×W, for the scan's lower bound (distance.py)
    thumbs/HxW.ids   int64 index row of each thumbnail row
    thumbs.json      {"HxW": {"rows": n, "shape": [by, bx, 3], "blocks": 32}}
    descriptors/NAME.f16  built with --descriptor: every image's copy-detection descriptor (float16,
                     row i = image i; NAME = sscd), recorded under "descriptors" in embedder.json

Every image gets a thumbnail at its own size (no resize needed, so it is cheap); ``--thumb-size``
adds thumbnails of every image fitted to a generation size (e.g. 512x512 when the training
images are of mixed sizes).

The folder is written under a temporary name and renamed, so a crash never leaves a
half-built index that looks complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from imgextract import distance
from imgextract.errors import InputError
from imgextract.index.choice import apply, search
from imgextract.models.embedders import Embedder, load_embedder


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


def lock_path(dest: Path) -> Path:
    """``.NAME.lock`` beside the index: held by whoever writes it (a build, ``index duplicates``)."""
    return Path(dest).with_name(f".{Path(dest).name}.lock")


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
    vectors: np.ndarray | None = None          # vectors.f16, memory-mapped (None: an older index)
    _thumbs: dict = field(default_factory=dict, repr=False)
    _thumbs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def thumbs(self, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """(thumbnails memory-mapped, position of each index row in them or -1) for training images
        fitted to ``size=(H, W)``; None when the index holds none for that size."""
        key = size_key(size)
        with self._thumbs_lock:
            if key not in self._thumbs:
                self._thumbs[key] = _open_thumbs(self.path, key, len(self.table))
            return self._thumbs[key]

    def sizes_without_thumbs(self) -> list[str]:
        """Generation sizes asked for so far that the index holds no thumbnails of."""
        with self._thumbs_lock:
            return sorted(k for k, v in self._thumbs.items() if v is None)

    def thumb_info(self) -> dict:
        try:
            return json.loads((self.path / f"{THUMBS}.json").read_text())
        except (OSError, ValueError):
            return {}

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest rows per query: (similarities, row ids), -1 where fewer than k exist.

        An approximate index is asked for more candidates, which are then re-ranked exactly
        against the stored vectors, so compression never reorders what reaches the pixel tests."""
        depth = (self.embedder.get("faiss_params") or {}).get("rerank")   # tuned at build; None: the default
        return search(self.faiss_index, self.vectors, vectors, k, depth)

    def vector_rows(self, start: int, stop: int) -> np.ndarray:
        """Stored vectors of rows [start, stop) as float32 (from vectors.f16, else from FAISS)."""
        if self.vectors is not None:
            return np.asarray(self.vectors[start:stop], dtype=np.float32)
        return self.faiss_index.reconstruct_n(start, stop - start)

    def load_embedder(self, device: str = "auto") -> Embedder:
        return load_embedder(self.embedder["spec"], device)

    def descriptor_vectors(self, name: str) -> np.ndarray:
        """Stored descriptors of every row (memory-mapped float16); check_descriptor first."""
        dim = self.embedder["descriptors"][name]["dimension"]
        return np.memmap(self.path / DESCRIPTORS / f"{name}.f16", np.float16, "r", shape=(len(self.table), dim))


_STDOUT_LOCK = threading.Lock()
_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def faiss_quiet():
    """Silence what faiss's C++ prints on standard output (on-disk lists say "resizing ..." and
    "updating ondisk filename ..."): imgextract's stdout carries results only."""
    with _STDOUT_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
            yield
        finally:
            _LIBC.fflush(None)   # C's buffered stdout goes to /dev/null, not to the restored stdout
            os.dup2(saved, 1)
            os.close(saved)


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
    embedder = json.loads((path / "embedder.json").read_text())
    # IVF lists stay on disk, paged in as searched: in index.faiss (IO_FLAG_MMAP), or in index.ivfdata
    # beside it, which faiss maps itself (IO_FLAG_MMAP or READ_ONLY there make its searches crash)
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR if (path / IVFDATA).is_file() else \
        faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
    try:
        with faiss_quiet():
            index = faiss.read_index(str(path / "index.faiss"), flags)
    except RuntimeError:
        index = faiss.read_index(str(path / "index.faiss"))
    apply(index, embedder.get("faiss_params") or {})
    if gpu != "off" and _faiss_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    table = pq.read_table(path / "images.parquet").to_pandas()
    if index.ntotal != len(table) or index.d != embedder.get("dimension"):
        raise InputError(f"index folder {path} is inconsistent ({index.ntotal} vectors of dim {index.d}, "
                         f"{len(table)} rows, embedder dim {embedder.get('dimension')})",
                         "rebuild it with `imgextract index build`")
    if any(k.startswith("pixels by URL") for k in embedder.get("source_statuses") or {}):
        from imgextract.sources import fetch
        fetch.use_status_file(path / fetch.STATUS_FILE)  # URL outcomes live with the index
    vectors = np.memmap(path / VECTORS, np.float16, "r", shape=(len(table), index.d)) \
        if (path / VECTORS).is_file() else None
    return TrainingIndex(path, index, table, embedder, vectors)


THUMBS = "thumbs"
DESCRIPTORS = "descriptors"

VECTORS = "vectors.f16"
IVFDATA = "index.ivfdata"


def size_key(size: tuple[int, int]) -> str:
    """(H, W) → "HxW", the name of a thumbnail set."""
    return f"{size[0]}x{size[1]}"


def _open_thumbs(path: Path, key: str, rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        info = json.loads((path / f"{THUMBS}.json").read_text()).get(key)
    except (OSError, ValueError):
        return None
    if not info or info.get("blocks") != distance.THUMB_BLOCKS or not info["rows"]:
        return None
    data = np.memmap(path / THUMBS / f"{key}.f16", np.float16, "r", shape=(info["rows"], *info["shape"]))
    ids = np.fromfile(path / THUMBS / f"{key}.ids", np.int64)
    pos = np.full(rows, -1, np.int64)
    pos[ids] = np.arange(len(ids))
    return data, pos


def _faiss_gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


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


def check_descriptor(index: TrainingIndex, record: dict, spec: str) -> None:
    """Refuse a descriptor the index has no stored vectors of: a training image is never decoded
    to describe it at scan time, so the index must have been built with the same weights."""
    from imgextract.models.descriptors import same_descriptor
    name = record["name"]
    stored = (index.embedder.get("descriptors") or {}).get(name)
    rebuild = (f"rebuild the index with it: imgextract index build SOURCE --name {index.path} --descriptor {spec} "
               "--overwrite (or drop --descriptor)")
    if stored is None:
        raise InputError(f"index {index.path} was built without the {name} descriptor", rebuild)
    if not same_descriptor(stored, record) or not (index.path / DESCRIPTORS / f"{name}.f16").is_file():
        raise InputError(f"index {index.path} stores {name} descriptors of other weights ({stored.get('spec')}, "
                         f"fingerprint {stored.get('weights_fingerprint')}) than {spec}", rebuild)
