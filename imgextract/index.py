"""Training-image indexes: a FAISS index plus the table of what it holds.

An index is a folder ``indexes/NAME/`` (or under ``$IMGEXTRACT_INDEX_DIR``)::

    index.faiss      inner-product FAISS index over L2-normalised embeddings
    images.parquet   id, path, caption, sha256, width, height, phash, dhash, whash, extra columns
    embedder.json    the embedder record (spec, dimension, preprocessing, weights fingerprint)
    skipped.json     unreadable images, listed with the reason
    thumbs/HxW.f16   box thumbnails (float16, rows of by×bx×3 block means) of the training
                     images as fitted to H×W, for the scan's lower bound (distance.py)
    thumbs/HxW.ids   int64 index row of each thumbnail row
    thumbs.json      {"HxW": {"rows": n, "shape": [by, bx, 3], "blocks": 32}}

Every image gets a thumbnail at its own size (no resize needed, so it is cheap); ``--thumb-size``
adds thumbnails of every image fitted to a generation size (e.g. 512x512 when the training
images are of mixed sizes).

The folder is written under a temporary name and renamed, so a crash never leaves a
half-built index that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imgextract import distance, hashes
from imgextract.embedders import Embedder, load_embedder
from imgextract.faiss_choice import apply, choose_factory, search, training_sample, tune
from imgextract.errors import InputError
from imgextract.locks import exclusive
from imgextract.sources import BadImage, open_rgb

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
        return search(self.faiss_index, self.vectors, vectors, k)

    def vector_rows(self, start: int, stop: int) -> np.ndarray:
        """Stored vectors of rows [start, stop) as float32 (from vectors.f16, else from FAISS)."""
        if self.vectors is not None:
            return np.asarray(self.vectors[start:stop], dtype=np.float32)
        return self.faiss_index.reconstruct_n(start, stop - start)

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
    embedder = json.loads((path / "embedder.json").read_text())
    try:  # IVF lists stay on disk, paged in as searched
        index = faiss.read_index(str(path / "index.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
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
        from imgextract import fetch
        fetch.use_status_file(path / fetch.STATUS_FILE)  # URL outcomes live with the index
    vectors = np.memmap(path / VECTORS, np.float16, "r", shape=(len(table), index.d)) \
        if (path / VECTORS).is_file() else None
    return TrainingIndex(path, index, table, embedder, vectors)


THUMBS = "thumbs"


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


class ThumbWriter:
    """Appends thumbnails per size to raw files, so a build streams them instead of holding them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, tuple] = {}

    def add(self, row: int, thumbs: dict[tuple[int, int], np.ndarray]) -> None:
        for size, t in thumbs.items():
            key = size_key(size)
            if key not in self.files:
                self.folder.mkdir(exist_ok=True)
                self.files[key] = (open(self.folder / f"{key}.f16", "wb"), open(self.folder / f"{key}.ids", "wb"),
                                   list(t.shape), [0])
            data, ids, _, count = self.files[key]
            data.write(t.astype(np.float16).tobytes())
            ids.write(np.int64(row).tobytes())
            count[0] += 1

    def close(self) -> dict:
        info = {}
        for key, (data, ids, shape, count) in self.files.items():
            data.close()
            ids.close()
            info[key] = {"rows": count[0], "shape": shape, "blocks": distance.THUMB_BLOCKS}
        return info


def parse_size(text: str) -> tuple[int, int]:
    """``512`` or ``512x768`` (height x width) → (H, W)."""
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise InputError(f"--thumb-size {text!r}", "give a generation size as 512 or HxW, e.g. 512x768")
    return h, w


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
    kind: str = "folder"
    statuses: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    resumed_parts: int = 0


def build_index(source: Path, name: str, embedder_spec: str = "pixel", *, batch_size: int = 64,
                overwrite: bool = False, image_column: str | None = None,
                caption_column: str | None = None, factory: str = "auto", max_memory: int = 4 * 2**30,
                device: str = "auto", progress: bool = True, thumb_sizes: tuple = (),
                workers: int | None = None, embeddings: bool = False, images: Path | None = None) -> BuildResult:
    """Embed and hash every readable image of ``source`` into ``indexes/NAME``.

    The source's form (folder, table, img2dataset output) is detected by ``sources.plan_source``.
    Work is done part by part (an img2dataset shard, or PART_SIZE images), each part written
    to ``.NAME.tmp/parts/`` atomically: an interrupted build resumes at the first missing part.
    Unreadable images are listed in ``skipped.json`` and in the result; the rest is indexed.
    """
    from imgextract.sources import plan_source
    dest = resolve_index(name)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}", "give a positive number of images per batch")
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--name {name} names a file ({dest})", "choose a name that is a folder or does not exist")
    check_replaceable(dest, overwrite)
    embedder = load_embedder(embedder_spec, device)
    if factory != "auto":
        _check_factory(factory, embedder.dim)
    plan = plan_source(Path(source), image_column, caption_column, embeddings=embeddings, images=images,
                       embedder=embedder)
    with exclusive(dest.with_name(f".{dest.name}.lock"), f"index {dest}"):
        check_replaceable(dest, overwrite)  # again, under the lock: another writer may have finished
        settings = {"source": str(Path(source).resolve()), "kind": plan.kind, "embedder": embedder.record(),
                    "thumb_sizes": [list(t) for t in thumb_sizes], "image_column": image_column,
                    "caption_column": caption_column, "parts": [p.name for p in plan.parts],
                    "images": str(Path(images).resolve()) if images is not None else None}
        return _build(source, dest, plan, settings, embedder, batch_size, factory, progress,
                      [tuple(t) for t in thumb_sizes], workers or os.cpu_count() or 1, max_memory)


def _check_factory(factory: str, dim: int) -> None:
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InputError(f"--factory {factory!r} is not a FAISS index_factory string for {dim}-d vectors",
                         "use e.g. Flat, HNSW32 or IVF256,Flat") from exc


def load_training_image(rec, thumb_sizes: list[tuple[int, int]]) -> dict:
    """Read, decode, hash and thumbnail one training image (runs in a worker thread: PIL and
    numpy release the GIL for the heavy parts). A bad image comes back as ``{"skip": reason}``."""
    from imgextract import shards
    try:
        data = shards.read_bytes(rec.path)  # read once: hashed here, decoded by open_rgb
        image = open_rgb(rec.path, data)
    except OSError as exc:
        return {"skip": {"path": str(rec.path), "reason": exc.strerror or str(exc) or type(exc).__name__}}
    except BadImage as bad:
        return {"skip": {"path": str(bad.path), "reason": bad.reason}}
    own = (image.height, image.width)
    thumbs = {own: distance.block_means(distance.to_uint8(image))}
    for size in thumb_sizes:
        if size != own:
            thumbs[size] = distance.block_means(distance.to_uint8(image, size))
    return {"image": image, "sha256": hashlib.sha256(data).hexdigest(), "hashes": hashes.image_hashes(image),
            "thumbs": thumbs}


PARTS = "parts"
VECTORS = "vectors.f16"
BUILD_JSON = "build.json"


def _build(source: Path, dest: Path, plan, settings: dict, embedder: Embedder, batch_size: int, factory: str,
           progress: bool, thumb_sizes: list[tuple[int, int]], workers: int, max_memory: int) -> BuildResult:
    tmp, resumed = _resumable_temp_dir(dest, settings)
    parts_dir = tmp / PARTS
    parts_dir.mkdir(exist_ok=True)
    from imgextract.engine import Progress
    total = sum(p.size for p in plan.parts)
    bar = Progress(total, f"index {dest.name}", "img") if progress and total else None
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, part in enumerate(plan.parts):
            if not (parts_dir / f"{i:05d}.done.json").is_file():
                loaded = part.load()
                if isinstance(loaded, dict):  # precomputed vectors: nothing to decode
                    _write_part(parts_dir, i, loaded["rows"], loaded["vectors"], [], loaded["statuses"], {})
                else:
                    records, statuses = loaded
                    tick = (lambda n, base=done: bar.update_to(min(total, base + n))) if bar else None
                    _build_part(parts_dir, i, records, statuses, embedder, batch_size, thumb_sizes, pool, tick)
                if os.environ.get("IMGEXTRACT_SLOW_PART"):  # test hook: time to interrupt between parts
                    time.sleep(float(os.environ["IMGEXTRACT_SLOW_PART"]))
            done += part.size
            if bar:
                bar.update_to(min(total, done))
    if bar:
        bar.close()
    return _assemble(source, tmp, dest, plan, embedder, factory, resumed, max_memory)


def _build_part(parts_dir: Path, i: int, records: list, statuses, embedder: Embedder, batch_size: int,
                thumb_sizes: list[tuple[int, int]], pool: ThreadPoolExecutor, tick=None) -> None:
    """Rows, vectors and thumbnails of one part, written to ``parts/NNNNN.*``; ``.done.json`` last."""
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    skipped: list[dict] = []
    thumbs = ThumbWriter(parts_dir / f"{i:05d}.thumbs")
    batches = list(_chunks(records, batch_size))
    submit = lambda b: [pool.submit(load_training_image, r, thumb_sizes) for r in b]  # noqa: E731
    pending = submit(batches[0]) if batches else []
    seen = 0
    for j, batch in enumerate(batches):
        loaded = [f.result() for f in pending]
        pending = submit(batches[j + 1]) if j + 1 < len(batches) else []  # decode ahead while embedding
        kept = [(rec, got) for rec, got in zip(batch, loaded) if "skip" not in got]
        skipped += [got["skip"] for got in loaded if "skip" in got]
        if kept:
            vectors.append(embedder.embed([got["image"] for _, got in kept]))
        for rec, got in kept:
            im = got["image"]
            thumbs.add(len(rows), got["thumbs"])
            rows.append({"path": str(rec.path), "caption": rec.caption, "sha256": got["sha256"],
                         "width": im.width, "height": im.height, **got["hashes"], **rec.extra})
        seen += len(batch)
        if tick:
            tick(seen)
    thumb_info = thumbs.close()
    matrix = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, embedder.dim), np.float32)
    _write_part(parts_dir, i, rows, matrix, skipped, statuses, thumb_info)


def _write_part(parts_dir: Path, i: int, rows: list[dict], matrix: np.ndarray, skipped: list, statuses,
                thumb_info: dict) -> None:
    np.save(parts_dir / f"{i:05d}.vectors.npy", matrix)
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), parts_dir / f"{i:05d}.rows.parquet")
    from imgextract.rundir import write_json_atomic
    write_json_atomic(parts_dir / f"{i:05d}.done.json", {"rows": len(rows), "skipped": skipped,
                                                       "statuses": dict(statuses), "thumbs": thumb_info})


def _assemble(source: Path, tmp: Path, dest: Path, plan, embedder: Embedder, factory: str,
              resumed: int, max_memory: int) -> BuildResult:
    """The parts, in order, become one index: global ids, one FAISS index, thumbnails per size."""
    from collections import Counter

    from imgextract.rundir import read_json
    parts_dir = tmp / PARTS
    tables, vectors, skipped, statuses = [], [], [], Counter()
    thumbs: dict[str, list] = {}
    offset = 0
    for i in range(len(plan.parts)):
        done = read_json(parts_dir / f"{i:05d}.done.json")
        skipped += done["skipped"]
        statuses.update(done["statuses"])
        if done["rows"]:
            tables.append(pq.read_table(parts_dir / f"{i:05d}.rows.parquet").to_pandas())
            vectors.append(parts_dir / f"{i:05d}.vectors.npy")
            for key, info in done["thumbs"].items():
                thumbs.setdefault(key, []).append((i, offset, info))
        offset += done["rows"]
    if not offset:
        raise InputError(f"no readable image in {source} ({len(skipped)} skipped)",
                         "check the files listed below",
                         details=[f"skipped {s['path']}: {s['reason']}" for s in skipped])
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "id", np.arange(len(table)))
    # the vectors, streamed part by part into one float16 file: kept for exact re-ranking
    dim = embedder.dim
    with open(tmp / VECTORS, "wb") as f:
        for part in vectors:
            f.write(np.load(part, mmap_mode="r").astype(np.float16).tobytes())
    stored = np.memmap(tmp / VECTORS, np.float16, "r", shape=(offset, dim))
    chosen = choose_factory(offset, dim, max_memory) if factory == "auto" else factory
    index = faiss.index_factory(dim, chosen, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample = training_sample(offset, chosen)
        index.train(np.ascontiguousarray(stored[sample], dtype=np.float32))
    for part in vectors:  # the float32 vectors as embedded (the float16 copy only re-ranks)
        matrix = np.load(part, mmap_mode="r")
        for start in range(0, len(matrix), 65536):
            index.add(np.ascontiguousarray(matrix[start:start + 65536], dtype=np.float32))
    searched = tune(index, stored)
    faiss.write_index(index, str(tmp / "index.faiss"))
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp / "images.parquet")
    thumb_info = {}
    (tmp / THUMBS).mkdir(exist_ok=True)
    for key, pieces in thumbs.items():
        with open(tmp / THUMBS / f"{key}.f16", "wb") as data, open(tmp / THUMBS / f"{key}.ids", "wb") as ids:
            for i, off, _info in pieces:
                folder = parts_dir / f"{i:05d}.thumbs"
                data.write((folder / f"{key}.f16").read_bytes())
                ids.write((np.fromfile(folder / f"{key}.ids", np.int64) + off).tobytes())
        thumb_info[key] = {"rows": sum(p[2]["rows"] for p in pieces), "shape": pieces[0][2]["shape"],
                           "blocks": distance.THUMB_BLOCKS}
    (tmp / f"{THUMBS}.json").write_text(json.dumps(thumb_info, indent=2, sort_keys=True))
    record = {**embedder.record(), "imgextract_index": 1, "faiss_factory": chosen,
              "faiss_params": searched["params"], "recall_at_10": searched["recall_at_10"],
              "max_memory": max_memory,
              "source": str(Path(source).resolve()), "source_kind": plan.kind,
              "source_statuses": dict(statuses)}
    (tmp / "embedder.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    (tmp / "skipped.json").write_text(json.dumps(skipped, indent=2))
    remove_own(parts_dir, tmp)
    (tmp / BUILD_JSON).unlink()
    replace_dir(tmp, dest)
    return BuildResult(dest, len(table), skipped, plan.kind, dict(statuses), plan.notes, resumed)


def _resumable_temp_dir(dest: Path, settings: dict) -> tuple[Path, int]:
    """``.NAME.tmp`` of an interrupted build with the same settings is resumed (its finished parts
    kept); any other leftover of ours is replaced. Returns (folder, parts already done)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.is_dir() and not tmp.is_symlink() and (tmp / TEMP_MARKER).is_file():
        try:
            same = json.loads((tmp / BUILD_JSON).read_text()) == settings
        except (OSError, ValueError):
            same = False
        if same:
            return tmp, len(list((tmp / PARTS).glob("*.done.json")))
    tmp = own_temp_dir(dest)
    (tmp / BUILD_JSON).write_text(json.dumps(settings, sort_keys=True))
    return tmp, 0


TEMP_MARKER = ".imgextract-temp"


def remove_own(path: Path, root: Path) -> None:
    """Delete ``path`` only when it is provably imgextract's: ``root`` (``path`` itself or a folder
    holding it) carries the temp marker, and neither is a link or resolves outside ``root``."""
    path, root = Path(path), Path(root)
    if path.is_symlink() or root.is_symlink() or not (root / TEMP_MARKER).is_file():
        raise InputError(f"{path} is not a folder imgextract made (no {TEMP_MARKER} in {root}); refusing to delete it",
                         "move it away, then run again")
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        raise InputError(f"{path} resolves outside {root}; refusing to delete it", "move it away, then run again")
    shutil.rmtree(real)


def bench_workdir(given: Path | None, prefix: str) -> Path:
    """A benchmark's work folder, marked as imgextract's so its leftovers may be replaced: a fresh
    temporary one, or ``given`` when it is new, empty, or marked by an earlier run."""
    import tempfile
    work = Path(given) if given else Path(tempfile.mkdtemp(prefix=prefix))
    if work.exists() and any(work.iterdir()) and not (work / TEMP_MARKER).is_file():
        raise InputError(f"--workdir {work} holds files imgextract did not put there", "give a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / TEMP_MARKER).write_text("benchmark folder of imgextract; safe to delete\n")
    return work


def own_temp_dir(dest: Path) -> Path:
    """A fresh ``.NAME.tmp`` beside ``dest``; a leftover is removed only if it carries our marker."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists() or tmp.is_symlink():
        if tmp.is_symlink() or not (tmp / TEMP_MARKER).is_file():
            raise InputError(f"{tmp} exists and was not made by imgextract", "move it away, then run again")
        remove_own(tmp, tmp)
    tmp.mkdir(parents=True)
    (tmp / TEMP_MARKER).write_text("temporary folder of imgextract; safe to delete\n")
    return tmp


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished temp folder into place; the old one (checked to be ours) goes last."""
    (tmp / TEMP_MARKER).unlink()
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists() or old.is_symlink():
            remove_own(old, old)
        dest.rename(old)
        (old / TEMP_MARKER).write_text("previous version, being removed\n")
    tmp.rename(dest)
    if old is not None:
        remove_own(old, old)


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
