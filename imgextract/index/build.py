"""Building an index, part by part, so that a killed build resumes where it stopped.

:func:`prepare` checks every argument and plans the source (nothing is written); :func:`build`
then works part by part (an img2dataset shard, or PART_SIZE images), each part written to
``.NAME.tmp/parts/`` with ``NNNNN.done.json`` last, and assembles them into the index folder,
which replaces the old one only when complete. The caller holds the index's lock
(:func:`imgextract.index.store.lock_path`) and shows the progress :func:`build` yields.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imgextract import distance, hashes
from imgextract.errors import InputError
from imgextract.folders import TEMP_MARKER, own_temp_dir, remove_own, replace_dir
from imgextract.index.choice import choose_factory, training_sample, tune
from imgextract.index.store import MARKER, THUMBS, VECTORS, check_replaceable, resolve_index, size_key
from imgextract.models.embedders import Embedder, load_embedder
from imgextract.progress import Step
from imgextract.rundir import read_json, write_json_atomic
from imgextract.sources import locators, plan_source
from imgextract.sources.images import BadImage, open_rgb
from imgextract.sources.records import BadPart


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


@dataclass
class BuildJob:
    """A checked, planned build: everything :func:`build` needs, nothing written yet."""

    source: Path
    dest: Path
    plan: object
    settings: dict
    embedder: Embedder
    batch_size: int
    factory: str
    thumb_sizes: list
    workers: int
    max_memory: int
    overwrite: bool


def prepare(source: Path, name: str, embedder_spec: str = "pixel", *, batch_size: int = 64,
            overwrite: bool = False, image_column: str | None = None, caption_column: str | None = None,
            factory: str = "auto", max_memory: int = 4 * 2**30, device: str = "auto", thumb_sizes: tuple = (),
            workers: int | None = None, embeddings: bool = False, images: Path | None = None) -> BuildJob:
    """Check every argument, load the embedder and plan the source's parts (its form detected by
    ``sources.plan_source``); nothing is written."""
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
    settings = {"source": str(Path(source).resolve()), "kind": plan.kind, "embedder": embedder.record(),
                "thumb_sizes": [list(t) for t in thumb_sizes], "image_column": image_column,
                "caption_column": caption_column, "parts": [p.name for p in plan.parts],
                "images": str(Path(images).resolve()) if images is not None else None}
    return BuildJob(Path(source), dest, plan, settings, embedder, batch_size, factory,
                    [tuple(t) for t in thumb_sizes], workers or os.cpu_count() or 1, max_memory, overwrite)


def build(job: BuildJob) -> Generator[Step, None, BuildResult]:
    """Embed and hash every readable image of the job's source into its index folder; yields progress.

    Run it holding the index's lock. Unreadable images are listed in ``skipped.json`` and in the
    result; the rest is indexed.
    """
    check_replaceable(job.dest, job.overwrite)  # again, under the lock: another writer may have finished
    return (yield from _build(job.source, job.dest, job.plan, job.settings, job.embedder, job.batch_size,
                              job.factory, job.thumb_sizes, job.workers, job.max_memory))


def _check_factory(factory: str, dim: int) -> None:
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise InputError(f"--factory {factory!r} is not a FAISS index_factory string for {dim}-d vectors",
                         "use e.g. Flat, HNSW32 or IVF256,Flat") from exc


MAX_FILE = 512 * 1024 * 1024   # no training image is larger; a bigger file is not read into memory


def _read_file(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE:
        raise OSError(f"{path} is {path.stat().st_size:,} bytes, over the {MAX_FILE:,}-byte limit for one image")
    return path.read_bytes()


def load_training_image(rec, thumb_sizes: list[tuple[int, int]]) -> dict:
    """Read, decode, hash and thumbnail one training image (runs in a worker thread: PIL and
    numpy release the GIL for the heavy parts). A bad image comes back as ``{"skip": reason}``."""
    if getattr(rec, "problem", None):
        return {"skip": {"path": str(rec.path), "reason": rec.problem}}
    try:
        # read once: hashed here, decoded by open_rgb; only a source's own locators are parsed as such
        data = locators.read_bytes(rec.path) if getattr(rec, "locator", False) else _read_file(Path(rec.path))
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

BUILD_JSON = "build.json"


def _build(source: Path, dest: Path, plan, settings: dict, embedder: Embedder, batch_size: int, factory: str,
           thumb_sizes: list[tuple[int, int]], workers: int, max_memory: int) -> Generator[Step, None, BuildResult]:
    tmp, resumed = _resumable_temp_dir(dest, settings)
    parts_dir = tmp / PARTS
    parts_dir.mkdir(exist_ok=True)
    total = sum(p.size for p in plan.parts)
    what = f"index {dest.name}"
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, part in enumerate(plan.parts):
            if not (parts_dir / f"{i:05d}.done.json").is_file():
                try:
                    loaded = part.load()
                except BadPart as bad:   # listed in skipped.json; the other parts are built
                    _write_part(parts_dir, i, [], np.zeros((0, embedder.dim), np.float32),
                                [{"path": bad.path, "reason": bad.reason}], {}, {})
                    loaded = None
                if loaded is None:
                    pass
                elif isinstance(loaded, dict):  # precomputed vectors: nothing to decode
                    _write_part(parts_dir, i, loaded["rows"], loaded["vectors"], [], loaded["statuses"], {})
                else:
                    records, statuses = loaded
                    for seen in _build_part(parts_dir, i, records, statuses, embedder, batch_size, thumb_sizes, pool):
                        yield Step(what, min(total, done + seen), total, "img")
                if os.environ.get("IMGEXTRACT_SLOW_PART"):  # test hook: time to interrupt between parts
                    time.sleep(float(os.environ["IMGEXTRACT_SLOW_PART"]))
            done += part.size
            if total:
                yield Step(what, min(total, done), total, "img")
    return _assemble(source, tmp, dest, plan, embedder, factory, resumed, max_memory)


def _build_part(parts_dir: Path, i: int, records: list, statuses, embedder: Embedder, batch_size: int,
                thumb_sizes: list[tuple[int, int]], pool: ThreadPoolExecutor) -> Iterator[int]:
    """Rows, vectors and thumbnails of one part, written to ``parts/NNNNN.*``; ``.done.json`` last.
    Yields how many of the part's records are done."""
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
        yield seen
    thumb_info = thumbs.close()
    matrix = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, embedder.dim), np.float32)
    _write_part(parts_dir, i, rows, matrix, skipped, statuses, thumb_info)


def _write_part(parts_dir: Path, i: int, rows: list[dict], matrix: np.ndarray, skipped: list, statuses,
                thumb_info: dict) -> None:
    np.save(parts_dir / f"{i:05d}.vectors.npy", matrix)
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), parts_dir / f"{i:05d}.rows.parquet")
    write_json_atomic(parts_dir / f"{i:05d}.done.json", {"rows": len(rows), "skipped": skipped,
                                                       "statuses": dict(statuses), "thumbs": thumb_info})


def _assemble(source: Path, tmp: Path, dest: Path, plan, embedder: Embedder, factory: str,
              resumed: int, max_memory: int) -> BuildResult:
    """The parts, in order, become one index: global ids, one FAISS index, thumbnails per size."""
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
    (tmp / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True))
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
