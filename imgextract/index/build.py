"""Building an index, part by part, so that a killed build resumes where it stopped.

:func:`prepare` checks every argument and plans the source (nothing is written); then, holding
the index's lock (:func:`imgextract.index.store.lock_path`), :func:`begin` finds the parts still
to build (an img2dataset shard, or PART_SIZE images each), an engine runs :class:`PartBuilder` on
each of them (here: :func:`local_parts`; on a Ray cluster: ``engines.ray.build_parts``), every
part written to ``.NAME.tmp/parts/`` with ``NNNNN.done.json`` last, and :func:`finish` assembles
them into the index folder, which replaces the old one only when complete. :func:`build` is
the local whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from imgextract import copies, distance, hashes
from imgextract.errors import InputError
from imgextract.folders import TEMP_MARKER, own_temp_dir, remove_own, replace_dir
from imgextract.index.choice import choose_factory, training_sample, tune
from imgextract.index.settings import BuildSettings
from imgextract.index.store import DESCRIPTORS, IVFDATA, MARKER, THUMBS, VECTORS, faiss_quiet, check_replaceable, resolve_index, size_key
from imgextract.models.descriptors import load_descriptor, resolved_spec
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
    hashes: bool = False
    descriptor: object = None     # models.descriptors: stored per image for the scans' similarity column
    processes: int | None = None  # local engine: parts built side by side in this many processes (None: auto)


def prepare(source: Path, name: str, settings: BuildSettings | None = None) -> BuildJob:
    """Check every argument, load the embedder and plan the source's parts (its form detected by
    ``sources.plan_source``); nothing is written.

    ``thumb_sizes``: generation sizes to store thumbnails at besides each image's own; None: no
    thumbnails at all (LAION scale: scans then decode their candidates, see ARCHITECTURE.md).
    ``hashes``: also store every image's perceptual hashes. Off by default: they cost more than the
    image's decode, and scans hash the copies they find (``stages.scan.TrainingImages``).
    ``descriptor``: a ``models.descriptors`` spec (``sscd:PATH``) whose vector of every image is
    stored in ``descriptors/NAME.f16``, so a scan can report the candidates' similarity under it."""
    s = settings if settings is not None else BuildSettings()
    thumb_sizes, images = s.thumb_sizes, s.images
    dest = resolve_index(name)
    if dest.exists() and not dest.is_dir():
        raise InputError(f"--name {name} names a file ({dest})", "choose a name that is a folder or does not exist")
    check_replaceable(dest, s.overwrite)
    described = load_descriptor(resolved_spec(s.descriptor), s.device) if s.descriptor is not None else None
    embedder = load_embedder(s.embedder, s.device)
    if s.factory != "auto":
        _check_factory(s.factory, embedder.dim)
    plan = plan_source(Path(source), s.image_column, s.caption_column, embeddings=s.embeddings, images=images,
                       embedder=embedder)
    settings = {"source": str(Path(source).resolve()), "kind": plan.kind, "embedder": embedder.record(),
                "thumb_sizes": [list(t) for t in thumb_sizes] if thumb_sizes is not None else None,
                "image_column": s.image_column,
                "caption_column": s.caption_column, "parts": [p.name for p in plan.parts],
                "images": str(Path(images).resolve()) if images is not None else None, "hashes": bool(s.hashes),
                "embeddings": bool(s.embeddings),
                "descriptor": described.record() if described is not None else None}
    return BuildJob(Path(source), dest, plan, settings, embedder, s.batch_size, s.factory,
                    [tuple(t) for t in thumb_sizes] if thumb_sizes is not None else None,
                    s.workers or os.cpu_count() or 1, s.max_memory, s.overwrite,
                    bool(s.hashes), described, s.processes)


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


NO_HASHES = {name: None for name in hashes.HASHES}


def load_training_image(rec, thumb_sizes: list[tuple[int, int]] | None, with_hashes: bool = False,
                        embedder: Embedder | None = None) -> dict:
    """Read, decode, checksum and thumbnail one training image, hash it when asked, and embed it
    when given an embedder that works per image (runs in a worker thread: PIL and numpy release
    the GIL for the heavy parts). A bad image comes back as ``{"skip": reason}``."""
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
    region = None
    if getattr(rec, "mask", None) is not None:
        try:
            region = template_region(rec.mask, image.size)
        except (OSError, BadImage) as exc:
            reason = exc.reason if isinstance(exc, BadImage) else exc.strerror or str(exc)
            return {"skip": {"path": str(rec.path), "reason": f"its mask {rec.mask.name}: {reason}"}}
    own = (image.height, image.width)
    thumbs = {own: distance.block_means(distance.to_uint8(image))} if thumb_sizes is not None else {}
    for size in thumb_sizes or ():
        if size != own:
            thumbs[size] = distance.block_means(distance.to_uint8(image, size))
    return {"image": image, "sha256": hashlib.sha256(data).hexdigest(),
            "hashes": hashes.image_hashes(image) if with_hashes else NO_HASHES, "thumbs": thumbs,
            "vector": embedder.embed([image])[0] if embedder is not None else None,
            "region": {} if region is None else {"template_region": region}}


def template_region(mask: Path, size: tuple[int, int]) -> str:
    """A published template's mask (white: compared) stretched onto its image, as Webster compares them, and
    kept in the index as text (``copies.region_to_text``); a mask with nothing white compares nothing."""
    grey = open_rgb(mask, _read_file(mask)).convert("L").resize(size, Image.NEAREST)
    region = np.asarray(grey) >= 128
    if region.mean() < 0.05:
        raise OSError(f"{region.mean():.0%} of it is white (the region compared); a template needs its layout")
    return copies.region_to_text(region)


PARTS = "parts"
DESCRIBED = "descriptor"    # parts/NNNNN.descriptor.npy: the part's descriptor vectors

BUILD_JSON = "build.json"


def begin(job: BuildJob) -> tuple[Path, int, list[int]]:
    """Under the index's lock: the temporary folder (an interrupted build with the same settings is
    resumed), how many parts were already done, and the parts still to build."""
    check_replaceable(job.dest, job.overwrite)  # again, under the lock: another writer may have finished
    tmp, resumed = _resumable_temp_dir(job.dest, job.settings)
    (tmp / PARTS).mkdir(exist_ok=True)
    todo = [i for i in range(len(job.plan.parts)) if not (tmp / PARTS / f"{i:05d}.done.json").is_file()]
    return tmp, resumed, todo


def finish(job: BuildJob, tmp: Path, resumed: int) -> BuildResult:
    """Every part done: assemble them into the index folder (the same on every engine)."""
    return _assemble(job.source, tmp, job.dest, job.plan, job.embedder, job.factory, resumed, job.max_memory,
                     job.hashes, job.descriptor)


def local_parts(job: BuildJob, tmp: Path, todo: list[int]) -> Generator[Step, None, None]:
    """The parts ``todo`` built in this process, with progress per image (the local engine)."""
    total = sum(p.size for p in job.plan.parts)
    what = f"index {job.dest.name}"
    done = total - sum(job.plan.parts[i].size for i in todo)
    builder = PartBuilder(tmp / PARTS, job.plan, job.embedder, job.batch_size, job.thumb_sizes, job.workers,
                          job.hashes, job.descriptor)
    try:
        for i in todo:
            for seen in builder.steps(i):
                yield Step(what, min(total, done + seen), total, "img")
            done += job.plan.parts[i].size
            if total:
                yield Step(what, min(total, done), total, "img")
    finally:
        builder.close()


def build(job: BuildJob) -> Generator[Step, None, BuildResult]:
    """Embed every readable image of the job's source into its index folder, in this process;
    yields progress. Run it holding the index's lock. Unreadable images are listed in
    ``skipped.json`` and in the result; the rest is indexed. (``engines.*.build_parts`` runs the
    same parts elsewhere, between :func:`begin` and :func:`finish`.)"""
    tmp, resumed, todo = begin(job)
    yield from local_parts(job, tmp, todo)
    return finish(job, tmp, resumed)


class _InOrder:
    """An executor that runs each call where it is submitted (PartBuilder with no decoding threads)."""

    def submit(self, fn, *args) -> Future:
        done = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:   # handed back through result(), as a pool's future would
            done.set_exception(exc)
        return done

    def shutdown(self) -> None:
        pass


class PartBuilder:
    """One part of a build → ``parts/NNNNN.*``, ``.done.json`` last: the per-part callable every
    engine runs unchanged (:func:`local_parts` here, Ray's ``PartWorker``), as img2dataset hands
    one downloader to each distributor. A part is rewritten whole when run again, so the part of a
    killed worker is simply redone; nothing counts until its ``done.json`` exists."""

    def __init__(self, parts_dir: Path, plan, embedder: Embedder, batch_size: int,
                 thumb_sizes: list[tuple[int, int]], workers: int, with_hashes: bool, descriptor=None):
        self.parts_dir, self.plan, self.embedder = Path(parts_dir), plan, embedder
        self.descriptor = descriptor
        self.batch_size, self.thumb_sizes, self.with_hashes = batch_size, thumb_sizes, with_hashes
        # workers 0: every image in the calling thread. A part process is already one core's worth of
        # work, and handing each image to a thread and back cost 0.4 of the 2.4 ms an image takes
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else _InOrder()

    @classmethod
    def where_it_runs(cls, tmp: Path, settings: dict, batch_size: int, workers: int, device: str) -> "PartBuilder":
        """Rebuilt on a worker from the build's settings: the source planned again (its parts must be
        the ones the driver planned) and the embedder loaded on the worker's device."""
        embedder = load_embedder(settings["embedder"]["spec"], device)
        images = Path(settings["images"]) if settings.get("images") else None
        plan = plan_source(Path(settings["source"]), settings["image_column"], settings["caption_column"],
                           embeddings=settings["embeddings"], images=images, embedder=embedder)
        if [p.name for p in plan.parts] != settings["parts"]:
            raise RuntimeError(f"source {settings['source']} changed while its index was being built")
        described = settings.get("descriptor")
        return cls(Path(tmp) / PARTS, plan, embedder, batch_size,
                   [tuple(t) for t in settings["thumb_sizes"]] if settings["thumb_sizes"] is not None else None,
                   workers, settings["hashes"], load_descriptor(described["spec"], device) if described else None)

    def __call__(self, i: int) -> int:
        for _ in self.steps(i):
            pass
        return i

    def steps(self, i: int) -> Iterator[int]:
        """Build part ``i``; yields how many of its records are done."""
        try:
            loaded = self.plan.parts[i].load()
        except BadPart as bad:   # listed in skipped.json; the other parts are built
            _write_part(self.parts_dir, i, [], np.zeros((0, self.embedder.dim), np.float32),
                        [{"path": bad.path, "reason": bad.reason}], {}, {}, self._no_descriptors())
            loaded = None
        if isinstance(loaded, dict):  # precomputed vectors: nothing to decode
            _write_part(self.parts_dir, i, loaded["rows"], loaded["vectors"], [], loaded["statuses"], {},
                        self._no_descriptors())
        elif loaded is not None:
            records, statuses = loaded
            yield from _build_part(self.parts_dir, i, records, statuses, self.embedder, self.batch_size,
                                   self.thumb_sizes, self.pool, self.with_hashes, self.descriptor)
        if os.environ.get("IMGEXTRACT_SLOW_PART"):  # test hook: time to interrupt a build after a part
            time.sleep(float(os.environ["IMGEXTRACT_SLOW_PART"]))

    def _no_descriptors(self) -> np.ndarray | None:
        return np.zeros((0, self.descriptor.dim), np.float32) if self.descriptor is not None else None

    def close(self) -> None:
        self.pool.shutdown()


def _build_part(parts_dir: Path, i: int, records: list, statuses, embedder: Embedder, batch_size: int,
                thumb_sizes: list[tuple[int, int]], pool: ThreadPoolExecutor, with_hashes: bool,
                descriptor=None) -> Iterator[int]:
    """Rows, vectors (and descriptors) and thumbnails of one part, written to ``parts/NNNNN.*``;
    ``.done.json`` last. Yields how many of the part's records are done."""
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    described: list[np.ndarray] = []
    skipped: list[dict] = []
    thumbs = ThumbWriter(parts_dir / f"{i:05d}.thumbs")
    batches = list(_chunks(records, batch_size))
    inline = embedder if getattr(embedder, "per_image", False) else None   # embedded in the decoding threads
    submit = lambda b: [pool.submit(load_training_image, r, thumb_sizes, with_hashes, inline)  # noqa: E731
                        for r in b]
    pending = submit(batches[0]) if batches else []
    seen = 0
    for j, batch in enumerate(batches):
        loaded = [f.result() for f in pending]
        pending = submit(batches[j + 1]) if j + 1 < len(batches) else []  # decode ahead while embedding
        kept = [(rec, got) for rec, got in zip(batch, loaded) if "skip" not in got]
        skipped += [got["skip"] for got in loaded if "skip" in got]
        if kept:
            vectors.append(np.stack([got["vector"] for _, got in kept]) if inline is not None else
                           embedder.embed([got["image"] for _, got in kept]))
            if descriptor is not None:
                described.append(descriptor.embed([got["image"] for _, got in kept]))
        for rec, got in kept:
            im = got["image"]
            thumbs.add(len(rows), got["thumbs"])
            rows.append({"path": str(rec.path), "caption": rec.caption, "sha256": got["sha256"],
                         "width": im.width, "height": im.height, **got["hashes"], **rec.extra, **got["region"]})
        seen += len(batch)
        yield seen
    thumb_info = thumbs.close()
    matrix = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, embedder.dim), np.float32)
    desc = None if descriptor is None else \
        np.concatenate(described).astype(np.float32) if described else np.zeros((0, descriptor.dim), np.float32)
    _write_part(parts_dir, i, rows, matrix, skipped, statuses, thumb_info, desc)


def _write_part(parts_dir: Path, i: int, rows: list[dict], matrix: np.ndarray, skipped: list, statuses,
                thumb_info: dict, descriptors: np.ndarray | None = None) -> None:
    np.save(parts_dir / f"{i:05d}.vectors.npy", matrix)
    if descriptors is not None:
        np.save(parts_dir / f"{i:05d}.{DESCRIBED}.npy", descriptors)
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), parts_dir / f"{i:05d}.rows.parquet")
    write_json_atomic(parts_dir / f"{i:05d}.done.json", {"rows": len(rows), "skipped": skipped,
                                                       "statuses": dict(statuses), "thumbs": thumb_info})


def _assemble(source: Path, tmp: Path, dest: Path, plan, embedder: Embedder, factory: str,
              resumed: int, max_memory: int, with_hashes: bool = False, descriptor=None) -> BuildResult:
    """The parts, in order, become one index: global ids, one FAISS index, thumbnails per size.

    Memory stays within ``max_memory`` whatever the row count: the table and the vectors are
    streamed part by part, training uses a sample, and an IVF index is filled part by part into
    files that ``faiss.contrib.ondisk.merge_ondisk`` joins into ``index.ivfdata`` (searched
    memory-mapped), so no step holds more than one part's vectors and codes.
    """
    parts_dir = tmp / PARTS
    dones = [read_json(parts_dir / f"{i:05d}.done.json") for i in range(len(plan.parts))]
    skipped = [s for done in dones for s in done["skipped"]]
    statuses: Counter = Counter()
    thumbs: dict[str, list] = {}
    offset, filled = 0, []
    for i, done in enumerate(dones):
        statuses.update(done["statuses"])
        if done["rows"]:
            filled.append((i, offset, done["rows"]))
            for key, info in done["thumbs"].items():
                thumbs.setdefault(key, []).append((i, offset, info))
        offset += done["rows"]
    if not offset:
        raise InputError(f"no readable image in {source} ({len(skipped)} skipped)",
                         "check the files listed below",
                         details=[f"skipped {s['path']}: {s['reason']}" for s in skipped])
    _write_table([parts_dir / f"{i:05d}.rows.parquet" for i, _, _ in filled], tmp / "images.parquet")
    vectors = [parts_dir / f"{i:05d}.vectors.npy" for i, _, _ in filled]
    dim = embedder.dim
    with open(tmp / VECTORS, "wb") as f:  # float16, kept for exact re-ranking
        for part in vectors:
            f.write(np.load(part).astype(np.float16).tobytes())
    stored = np.memmap(tmp / VECTORS, np.float16, "r", shape=(offset, dim))
    chosen = choose_factory(offset, dim, max_memory) if factory == "auto" else factory
    index = faiss.index_factory(dim, chosen, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        sample = training_sample(offset, chosen, limit=max_memory // 4 // (dim * 4))
        index.train(np.ascontiguousarray(stored[sample], dtype=np.float32))
    if faiss.try_extract_index_ivf(index) is not None:
        pieces = []
        for (i, start, _), part in zip(filled, vectors):
            piece = faiss.clone_index(index)
            _add(piece, np.load(part, mmap_mode="r"), start)   # global ids
            faiss.write_index(piece, str(parts_dir / f"{i:05d}.ivf"))
            pieces.append(str(parts_dir / f"{i:05d}.ivf"))
            del piece
        from faiss.contrib.ondisk import merge_ondisk
        with faiss_quiet():
            merge_ondisk(index, pieces, str(tmp / IVFDATA))
    else:
        for part in vectors:  # the float32 vectors as embedded (the float16 copy only re-ranks)
            _add(index, np.load(part, mmap_mode="r"))
    searched = tune(index, stored)
    faiss.write_index(index, str(tmp / "index.faiss"))
    del index
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
    described = {}
    if descriptor is not None:
        name = descriptor.record()["name"]
        (tmp / DESCRIPTORS).mkdir(exist_ok=True)
        with open(tmp / DESCRIPTORS / f"{name}.f16", "wb") as f:
            for i, _, _ in filled:
                f.write(np.load(parts_dir / f"{i:05d}.{DESCRIBED}.npy").astype(np.float16).tobytes())
        described[name] = descriptor.record()
    record = {**embedder.record(), "imgextract_index": 1, "faiss_factory": chosen,
              "faiss_params": searched["params"], "recall_at_10": searched["recall_at_10"],
              "max_memory": max_memory, "hashes": "every image" if with_hashes else "copies, when a scan finds them",
              "source": str(Path(source).resolve()), "source_kind": plan.kind,
              "source_statuses": dict(statuses), "descriptors": described}
    (tmp / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True))
    (tmp / "skipped.json").write_text(json.dumps(skipped, indent=2))
    remove_own(parts_dir, tmp)
    (tmp / BUILD_JSON).unlink()
    replace_dir(tmp, dest)
    return BuildResult(dest, offset, skipped, plan.kind, dict(statuses), plan.notes, resumed)


ADD_ROWS = 65536


def _add(index, matrix: np.ndarray, first_id: int | None = None) -> None:
    """Add in slices of ADD_ROWS (float32 copies of a slice only); ``first_id``: ids from there on."""
    for start in range(0, len(matrix), ADD_ROWS):
        rows = np.ascontiguousarray(matrix[start:start + ADD_ROWS], dtype=np.float32)
        if first_id is None:
            index.add(rows)
        else:
            index.add_with_ids(rows, np.arange(first_id + start, first_id + start + len(rows), dtype=np.int64))


def _write_table(files: list[Path], out: Path) -> None:
    """The parts' rows as one parquet file with global ids, one part in memory at a time.

    Parts may disagree on a column's type (all-null in one, text in another) or lack a column
    another has: each column takes its first non-null type (text when two disagree), and a part
    without it gets nulls."""
    schemas = [pq.read_schema(f) for f in files]
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for fld in schema:
            have = types.get(fld.name)
            if have is None or pa.types.is_null(have):
                types[fld.name] = fld.type
            elif not pa.types.is_null(fld.type) and fld.type != have:
                types[fld.name] = pa.string()
    target = pa.schema([pa.field("id", pa.int64())] + [pa.field(n, t) for n, t in types.items()])
    offset = 0
    with pq.ParquetWriter(out, target) as writer:
        for f in files:
            part = pq.read_table(f)
            cols = [pa.array(np.arange(offset, offset + part.num_rows), pa.int64())]
            for name, typ in types.items():
                cols.append(part[name].cast(typ) if name in part.column_names else pa.nulls(part.num_rows, typ))
            writer.write_table(pa.Table.from_arrays(cols, schema=target))
            offset += part.num_rows


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
