"""Scan: test every generation against its nearest training images.

For each generation: the index's embedder finds the k nearest training images, then each
candidate gets Carlini's distances (:mod:`imgextract.distance`: tiled L2, plain L2), the
perceptual-hash distances of :mod:`imgextract.hashes` and the copy verdict of
:mod:`imgextract.copies` (whole, portion or template, registered first). ``memorized`` is
``copy_kind != "none"`` under the default criterion ``copy``; ``tiled`` is Carlini's plain test.

Why it is fast: distances are exact integer sums (``distance.exact_distances``), and a candidate is
first tested on its box thumbnail from the index, no decode: a lower bound on its tiled L2, and the
copy screen (``copies.screen``: the verdict's tests on thumbnail windows, measured rather than
proven); only candidates whose bound is under ``exact_below`` (default: threshold + 0.10) or that
pass the screen are decoded and measured, and only those the screen passes or whose tiled L2 is
under the threshold are judged (registration is the verdict's main cost). Rows say which:
``exact`` True means ``tiled_l2`` and ``l2`` are full-resolution values, False means they are
lower bounds at or above ``exact_below`` (so no verdict can change). Carlini's relative
distance divides a candidate's L2 by the mean L2 to the ``relative_n`` nearest retrieved
training images. Under the ``copy`` and ``tiled`` criteria it is given for memorized candidates
only (NaN elsewhere), and the neighbours' L2 come from their thumbnails (lower bounds), so the
value is an *upper bound* on Carlini's (below 1 still proves "much closer to this image than to
its neighbours") and costs no decode. Under the ``relative``, ``either`` and ``both`` criteria
it is exact for every candidate and pruning is off. Generations are decoded, hashed and
tested by a thread pool, pipelined by chunks; rows keep the input order.

Work runs over shards of generations (a run's sample shards, or chunks of a plain folder);
each shard's matches land in ``scan/<params>/shard-NNNNN.parquet`` so a scan resumes, and
the same parameters never mix with others.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image
from threadpoolctl import threadpool_limits

from imgextract import copies, distance, folders, hashes, rundir
from imgextract.errors import InputError
from imgextract.index.store import TrainingIndex, open_index
from imgextract.models.embedders import Embedder
from imgextract.progress import Note, Step
from imgextract.stats import wilson_ci
from imgextract.sources.images import BadImage, list_image_files, open_rgb
from imgextract.sources.tables import LICENSE_COLUMNS, SOURCE_COLUMNS, role_column
from imgextract.distance import DEFAULT_THRESHOLD

FOLDER_SHARD = 512
MATCH_COLUMNS = ["generation_path", "caption_id", "caption", "sample_index", "seed", "train_id", "train_path",
                 "train_caption", "rank", "similarity", "tiled_l2", "l2", "phash_distance", "dhash_distance",
                 "whash_distance", "relative_l2", "exact", "pixels", "copy_kind", "copied_share", "copied_area",
                 "copy_mask", "copy_offset", "template_members", "memorized"]
# copy: the copy verdict (copies.py: whole, portion, template); tiled: Carlini's plain tiled L2 < threshold;
# relative: Carlini's relative distance; either / both: tiled or / and relative, as Carlini et al. combine them
CRITERIA = ("copy", "tiled", "relative", "either", "both")
KIND_ORDER = {"whole": 3, "template": 2, "portion": 1, "none": 0}


@dataclass(frozen=True)
class ScanParams:
    index: str
    k: int = 10
    threshold: float = distance.DEFAULT_THRESHOLD
    grid: int = distance.DEFAULT_GRID
    relative_n: int = 50            # Carlini et al. §5.1: neighbours in the relative distance (0 = off)
    alpha: float = 0.5
    relative_threshold: float = 1.0
    criterion: str = "copy"         # copy | tiled | relative | either | both
    exact_below: float | None = None  # tiled L2 measured exactly below this (None: threshold + 0.10)
    min_share: float = copies.CopyRule.min_share   # a copy covers this share of the image's detail, at least
    descriptor: str | None = None   # models.descriptors spec (sscd:PATH, absolute): adds sscd_similarity per row

    def rule(self) -> copies.CopyRule:
        return copies.CopyRule(threshold=self.threshold, grid=self.grid, min_share=self.min_share)

    @property
    def exact_limit(self) -> float:
        """Candidates whose thumbnail bound is at or above this keep the bound instead of an exact value."""
        return max(self.threshold, self.threshold + EXACT_MARGIN if self.exact_below is None else self.exact_below)

    def key(self, index: TrainingIndex) -> str:
        """Same parameters on the same index (however it was named) → the same scan folder."""
        params = {**asdict(self), "index": str(Path(index.path).resolve())}
        if params["descriptor"] is None:
            del params["descriptor"]    # keys of scans without one stay as they were
        blob = json.dumps({**params, "layout": SCAN_LAYOUT, "embedder": index.embedder.get("spec"),
                           "weights": index.embedder.get("weights_fingerprint")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


EXACT_MARGIN = 0.10


class TrainingImages:
    """Training images as uint8 arrays at a requested size, with a bounded, thread-safe cache.

    Hashes: the index's, when built with ``--hashes``; otherwise computed here for the candidates
    that are found copies (:meth:`hashes_of`), from the decoded original, once per process.
    """

    HASHED = 65536  # hashes remembered (a few hundred bytes each)

    def __init__(self, index: TrainingIndex, capacity: int = 256):
        self.paths = index.table["path"].tolist()
        self.stored = {name: index.table[name].tolist() for name in hashes.HASHES if name in index.table}
        self.capacity = capacity
        self._cache: OrderedDict = OrderedDict()
        self._hashes: OrderedDict = OrderedDict()
        self._thumbs: OrderedDict = OrderedDict()
        self._prepared: OrderedDict = OrderedDict()
        self._native: dict[int, tuple[int, int]] = {}   # (H, W) of each image decoded here
        self._lock = threading.Lock()

    def get(self, train_id: int, size: tuple[int, int]) -> np.ndarray | None:
        def decode():
            image = self._open(train_id)
            if image is None:
                return None
            self._native[train_id] = (image.height, image.width)
            return distance.to_uint8(image, size)
        return self._remember(self._cache, self.capacity, (train_id, size), decode)

    THUMBS = 16384  # thumbnails made on demand, remembered (6 KB each at 32×32 blocks)

    def thumb(self, train_id: int, size: tuple[int, int]) -> np.ndarray | None:
        """The box thumbnail the index would store for this image at ``size`` (float16, bit for bit),
        made from its decoded pixels when the index holds none: the screen then prunes candidates of an
        index built without thumbnails too, so only the few it lets through are judged."""
        def make():
            arr = self.get(train_id, size)
            return None if arr is None else distance.block_means(arr).astype(np.float16)
        return self._remember(self._thumbs, self.THUMBS, (train_id, size), make)

    PREPARED = 48   # training images prepared for the verdict, remembered (~2 MB each at 512 px)

    def prepared(self, train_id: int, size: tuple[int, int]) -> copies.Prepared | None:
        """The training image's side of the copy verdict at ``size``: a training image that many
        generations are judged against (a memorized one, or a popular neighbour) is downsampled,
        converted and transformed for registration once per process, not once per generation."""
        def make():
            arr = self.get(train_id, size)
            return None if arr is None else copies.Prepared(arr)
        return self._remember(self._prepared, self.PREPARED, (train_id, size), make)

    def _remember(self, cache: OrderedDict, capacity: int, key, make):
        """``cache[key]``, made by ``make()`` outside the lock when missing (two threads may make the same
        one once each); beyond ``capacity`` the least recently used goes."""
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        made = make()
        with self._lock:
            cache[key] = made
            if len(cache) > capacity:
                cache.popitem(last=False)
        return made

    def _open(self, train_id: int):
        try:
            path = self.paths[train_id]
            return open_rgb(Path(path)) if path else None  # "": pixels unavailable
        except BadImage:
            return None

    def hashes_of(self, train_id: int, compute: bool = False) -> dict:
        """The image's hashes: stored in the index; else, with ``compute``, remembered or hashed now
        from its decoded original; {} otherwise (or when its pixels cannot be read). Without
        ``compute`` nothing remembered is returned, so whether a row has hashes never depends on
        which generation a worker thread happened to finish first."""
        if len(self.stored) == len(hashes.HASHES) and all(
                isinstance(col[train_id], str) and col[train_id] for col in self.stored.values()):
            return {name: col[train_id] for name, col in self.stored.items()}
        if not compute:
            return {}
        with self._lock:
            if train_id in self._hashes:
                return self._hashes[train_id]
            native = self._native.get(train_id)
            same = self._cache.get((train_id, native)) if native else None
        # a cached array at the image's own size is its decoded pixels: no second decode
        image = Image.fromarray(same) if same is not None else self._open(train_id)
        found = hashes.image_hashes(image) if image is not None else {}
        with self._lock:
            self._hashes[train_id] = found
            if len(self._hashes) > self.HASHED:
                self._hashes.popitem(last=False)
        return found


MAX_GRID = 64
SCAN_LAYOUT = 4  # 2: folder shards keyed by file; 3: exact and pixels columns; 4: the copy verdict. Not mixed


class Described:
    """A descriptor and the index's stored vectors of it: each candidate row gets NAME_similarity."""

    def __init__(self, index: TrainingIndex, spec: str, device: str = "auto"):
        from imgextract.index.store import check_descriptor
        from imgextract.models.descriptors import load_descriptor
        self.descriptor = load_descriptor(spec, device)
        record = self.descriptor.record()
        check_descriptor(index, record, spec)
        self.column = f"{record['name']}_similarity"
        self.stored = index.descriptor_vectors(record["name"])

    def annotate(self, images: list, matched: list[list[dict]]) -> None:
        """Each image's candidate rows gain the cosine similarity of their descriptors."""
        if not images:
            return
        vectors = self.descriptor.embed(images)
        for vector, rows in zip(vectors, matched):
            for row in rows:
                row[self.column] = float(np.asarray(self.stored[row["train_id"]], np.float32) @ vector)


def described(index: TrainingIndex, params: ScanParams, device: str = "auto") -> Described | None:
    return Described(index, params.descriptor, device) if params.descriptor else None


def validate_params(params: ScanParams) -> None:
    """Every scan parameter checked before any work (and before the index is opened)."""
    if params.k < 1:
        raise InputError(f"-k {params.k}", "test at least one candidate (-k 1 or more; 10 is the default)")
    if not 1 <= params.grid <= MAX_GRID:
        raise InputError(f"--grid {params.grid}", f"use a tile grid from 1 to {MAX_GRID} per side (4 is Carlini et al.'s)")
    if not 0 < params.threshold <= 1:
        raise InputError(f"--threshold {params.threshold}", f"use a tiled-L2 threshold in (0, 1]; {DEFAULT_THRESHOLD} is the default")
    if params.relative_n < 0:
        raise InputError(f"--relative-n {params.relative_n}", "use 0 (off) or a positive number of neighbours")
    if params.alpha <= 0:
        raise InputError(f"--alpha {params.alpha}", "use a positive alpha (0.5 is Carlini et al.'s)")
    if params.criterion not in CRITERIA:
        raise InputError(f"unknown criterion '{params.criterion}'", f"use one of {', '.join(CRITERIA)}")
    if params.exact_below is not None and not 0 < params.exact_below <= 2:
        raise InputError(f"--exact-below {params.exact_below}",
                         "use a tiled-L2 value in (0, 2] (values below the threshold count as the threshold)")
    if not 0 < params.min_share <= 1:
        raise InputError(f"--min-share {params.min_share}", "use a share of the image's detailed area in (0, 1]; "
                         "0.25 is the default")
    if params.criterion not in ("tiled", "copy") and params.relative_n < 1:
        raise InputError(f"criterion '{params.criterion}' needs the relative distance",
                         "give --relative-n >= 1 (default 50)")


@dataclass
class ScanPlan:
    """What a scan will do: shards still to scan, every shard whose rows count, and what it noticed."""

    todo: list[tuple[str, pd.DataFrame]]
    shards: list[str]
    generations: int
    notes: list[str]
    current: dict[str, tuple[int, int]] | None = None    # plain folder: path → (size, mtime_ns)
    incomplete: dict | None = None                       # run still being generated
    listed_bad: list[dict] | None = None


def plan_scan(generations: Path, work: Path) -> ScanPlan:
    generations = Path(generations)
    if not generations.exists():
        raise InputError(f"generations {generations} do not exist", "pass a run folder or a folder of images")
    if rundir.is_run_dir(generations):
        return _plan_run(generations, work)
    if not generations.is_dir():
        raise InputError(f"generations {generations} is not a folder", "pass a run folder or a folder of images")
    return _plan_folder(generations, work)


def _plan_run(run: Path, work: Path) -> ScanPlan:
    samples = rundir.read_samples(run)
    if samples.empty:
        raise InputError(f"run {run} has no finished sample shard",
                         "run `imgextract generate` into it first (it resumes)")
    shards = [(name, df.reset_index(drop=True)) for name, df in samples.groupby(
        samples["file"].str.split("/").str[1], sort=True)]
    planned = rundir.planned_shards(run)
    notes, incomplete = [], None
    if planned and len(shards) < planned:
        incomplete = {"shards_finished": len(shards), "shards_planned": planned}
        notes.append(f"run {run} is incomplete: {len(shards)} of {planned} shards generated; scanning those "
                     "(scan again when `imgextract generate` has finished)")
    todo = [(n, rows) for n, rows in shards if not (work / f"{n}.parquet").is_file()]
    if "kept" in samples and todo:  # a sweep kept only the evidence: the other samples' pixels are gone
        dropped = sum(int((~rows["kept"].fillna(True).astype(bool)).sum()) for _, rows in todo)
        if dropped:
            todo = [(n, rows[rows["kept"].fillna(True).astype(bool)].reset_index(drop=True)) for n, rows in todo]
            notes.append(f"{dropped} sample(s) of this run were not kept (--keep evidence): scanning with these "
                         "parameters tests the kept samples only; the others keep their recorded matches under "
                         "the sweep's parameters and can be redrawn from their seeds")
    return ScanPlan(todo, [n for n, _ in shards], len(samples), notes, incomplete=incomplete)


def _plan_folder(folder: Path, work: Path) -> ScanPlan:
    """Resume by file: what was scanned before (same path, size, mtime) is kept, new files are
    scanned, vanished or changed files are dropped from the results, and the user is told."""
    files, bad = list_image_files(folder)
    if not files and not bad:
        raise InputError(f"folder {folder} holds no images", "point at the folder of generated images")
    current = {}
    for f in files:
        st = f.stat()
        current[str(f)] = (st.st_size, st.st_mtime_ns)
    done_names, done = [], {}
    for listing in sorted(work.glob("shard-*.files.parquet")):
        name = listing.name[: -len(".files.parquet")]
        if (work / f"{name}.parquet").is_file():
            done_names.append(name)
            t = pq.read_table(listing).to_pandas()
            done.update({p: (int(sz), int(mt)) for p, sz, mt in zip(t["path"], t["size"], t["mtime_ns"])})
    new = [p for p in current if done.get(p) != current[p]]
    gone = [p for p in done if p not in current]
    changed = [p for p in new if p in done]
    notes = []
    if done:
        notes.append(f"resuming: {len(current) - len(new)} file(s) already scanned, {len(new) - len(changed)} new, "
                     f"{len(changed)} changed (rescanned), {len(gone)} gone (dropped from the results)")
    first = max((int(n.split("-")[1]) for n in done_names), default=-1) + 1
    todo = []
    for j, i in enumerate(range(0, len(new), FOLDER_SHARD)):
        chunk = new[i:i + FOLDER_SHARD]
        todo.append((rundir.shard_name(first + j), pd.DataFrame({
            "generation_path": chunk, "size": [current[p][0] for p in chunk],
            "mtime_ns": [current[p][1] for p in chunk]})))
    return ScanPlan(todo, done_names + [n for n, _ in todo], len(current) + len(bad), notes, current=current,
                    listed_bad=bad)


CHUNK = 32  # generations decoded at once per shard: bounds memory (32 × 512² × 3 bytes)


@dataclass
class Generation:
    """One decoded generation and what every candidate test needs from it."""

    image: object           # PIL image (for the embedder)
    pixels: np.ndarray      # uint8 (H, W, 3)
    blocks: np.ndarray      # distance.block_means(pixels)
    _hashes: dict | None = field(default=None, repr=False)

    @property
    def hashes(self) -> dict:
        """Hashed when first asked: a scan or guard needs them only for rows with a training hash (the
        copies it finds), a sweep for every sample's record. Two threads may hash it once each."""
        if self._hashes is None:
            self._hashes = hashes.image_hashes(self.image)
        return self._hashes


def as_generation(image) -> Generation:
    pixels = distance.to_uint8(image)
    return Generation(image, pixels, distance.block_means(pixels))


def load_generation(path: str, min_side: int) -> Generation:
    return as_generation(open_rgb(Path(path), min_side=min_side))


def scan_shard(rows: pd.DataFrame, index: TrainingIndex, embedder: Embedder, train: TrainingImages,
               params: ScanParams, workers: int | None = None, data: list[bytes] | None = None,
               collect: dict | None = None, describe: Described | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Matches for one shard of generations, plus the generations that could not be read.

    Decoding, hashing and candidate tests run on a thread pool, CHUNK generations at a time,
    pipelined; the output keeps the order of ``rows``. ``data``: the generations' bytes when they are in
    memory (a sweep tests samples where they were drawn, before any is written). ``collect``:
    a dict that receives, per row, the decoded ``generations`` and the embedder's ``vectors``
    (None for an unreadable one), for what the caller keeps of each sample. ``describe``: every
    candidate row also gets the descriptor's similarity (``sscd_similarity``).
    """
    out, skipped = [], []
    paths = rows["generation_path"].tolist()
    gens, vecs = [None] * len(paths), [None] * len(paths)

    def load(i):
        try:
            if data is not None:
                return as_generation(open_rgb(Path(paths[i]), data=data[i], min_side=params.grid))
            return load_generation(paths[i], params.grid)
        except BadImage as bad:
            return {"path": str(bad.path), "reason": bad.reason}

    def emit(kept, vectors, futures):
        matched = [f.result() for f in futures]
        if describe is not None:
            describe.annotate([g.image for _, g in kept], matched)
        for (row_i, g), vector, matches in zip(kept, vectors, matched):
            if collect is not None:
                gens[row_i], vecs[row_i] = g, vector
            meta = rows.iloc[row_i]
            for m in matches:
                out.append({"generation_path": meta["generation_path"], "caption_id": meta.get("caption_id"),
                            "caption": meta.get("caption"), "sample_index": _int_or_none(meta.get("sample_index")),
                            "seed": _int_or_none(meta.get("seed")), **m})

    # A pipeline, so no core waits at a chunk's end: while the caller's thread embeds and searches one
    # chunk, the workers decode the next and test the one before (at most three chunks in memory).
    # One BLAS thread per worker: the pool already fills the cores, and nested BLAS threads made the
    # verdict's small matrix products 3x slower on 2 cores (bench_scan.py)
    starts = list(range(0, len(paths), CHUNK))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool, \
            threadpool_limits(limits=1, user_api="blas"):
        def decode(start):
            return [pool.submit(load, i) for i in range(start, min(start + CHUNK, len(paths)))]

        loading = decode(starts[0]) if starts else []
        testing: list = []      # chunks whose candidate tests are queued, oldest first
        for n, start in enumerate(starts):
            got = [f.result() for f in loading]
            loading = decode(starts[n + 1]) if n + 1 < len(starts) else []
            kept = [(start + j, g) for j, g in enumerate(got) if isinstance(g, Generation)]
            skipped += [g for g in got if not isinstance(g, Generation)]
            if kept:
                vectors = embedder.embed([g.image for _, g in kept])
                sims, ids = index.search(vectors, max(params.k, params.relative_n + 1))
                testing.append((kept, vectors, [pool.submit(match_generation, g, s, i, index, train, params)
                                                for (_, g), s, i in zip(kept, sims, ids)]))
            while len(testing) > 1:
                emit(*testing.pop(0))
        while testing:
            emit(*testing.pop(0))
    if collect is not None:
        collect.update(generations=gens, vectors=vecs)
    return pd.DataFrame(out, columns=MATCH_COLUMNS + ([describe.column] if describe is not None else [])), skipped


def match_image(image, sim_row: np.ndarray, id_row: np.ndarray, index: TrainingIndex, train: TrainingImages,
                params: ScanParams) -> list[dict]:
    """The near-duplicate test of one PIL image against its candidate training images (by rank)."""
    return match_generation(as_generation(image), sim_row, id_row, index, train, params)


def match_generation(gen: Generation, sim_row: np.ndarray, id_row: np.ndarray, index: TrainingIndex,
                     train: TrainingImages, params: ScanParams) -> list[dict]:
    """Candidates first on thumbnails (a lower bound, and the copy screen), then at full resolution
    where it matters: exact distances and the copy verdict (copies.judge) of every decoded candidate."""
    tab = index.table
    size = gen.pixels.shape[:2]
    cand = [(rank, int(t), float(s)) for rank, (t, s) in enumerate(zip(id_row, sim_row)) if t >= 0]
    k = min(params.k, len(cand))  # the first k are reported; the rest only feed the relative distance
    tiled, plain = np.full(len(cand), np.nan), np.full(len(cand), np.nan)
    exact = np.zeros(len(cand), bool)
    rule, by_copy = params.rule(), params.criterion == "copy"
    prune = params.criterion in ("tiled", "copy")
    could_copy = np.full(len(cand), by_copy)     # no thumbnail: judged at full resolution
    store = index.thumbs(size) if prune else None
    found: dict[int, np.ndarray] = {}
    if store is not None:
        data, pos = store
        stored = [j for j, (_, t, _) in enumerate(cand) if pos[t] >= 0]
        found = dict(zip(stored, data[pos[[cand[j][1] for j in stored]]])) if stored else {}
    if prune and distance.tile_blocks(size[0], params.grid) is not None \
            and distance.tile_blocks(size[1], params.grid) is not None:
        # the k reported ones without a stored thumbnail get it made from their pixels (on demand)
        made = {j: train.thumb(cand[j][1], size) for j in range(k) if j not in found}
        found.update({j: t for j, t in made.items() if t is not None})   # None: unreadable, left NaN
    if found:
        have = sorted(found)
        thumbs = np.stack([found[j] for j in have])
        bound = distance.tiled_l2_bound(gen.blocks, thumbs, size, params.grid)
        if bound is not None:
            tiled[have], plain[have] = bound
            first = [i for i, j in enumerate(have) if j < k]      # only the k reported are judged
            if by_copy and first:
                could_copy[[have[i] for i in first]] = copies.screen(gen.blocks, thumbs[first], rule)
            could_copy[k:] = False
    _measure(gen, cand, [j for j in range(k) if not tiled[j] >= params.exact_limit or could_copy[j]], tiled, plain,
             exact, train, params)  # NaN (no thumbnail) is measured too
    # judged: what the screen let through, and every whole copy by Carlini's test (so none is missed unjudged)
    to_judge = [j for j in range(k) if exact[j] and (could_copy[j] or tiled[j] < params.threshold)]
    prepared = copies.Prepared(gen.pixels) if to_judge else None
    judged = {j: copies.judge(prepared, train.prepared(cand[j][1], size), rule) for j in to_judge}
    copies.mark_templates(list(judged.values()))
    order = list(judged)
    kind = {j: judged[j].kind if j in judged else "none" for j in range(k)}
    # every one of the k is reported; one whose pixels cannot be read as "unavailable", with NaN distances
    rel = np.full(len(cand), np.nan)
    if params.relative_n >= 1:
        found = [j for j in range(k) if exact[j] and (kind[j] != "none" if by_copy else tiled[j] < params.threshold)]
        wanted = list(range(k)) if not prune else found
        if wanted:
            # neighbours without any value yet are measured; under pruning the others keep their bounds
            _measure(gen, cand, [j for j in range(len(cand)) if np.isnan(plain[j]) or not (prune or exact[j])],
                     tiled, plain, exact, train, params)
            readable = ~np.isnan(plain)
            rel_all = np.full(len(cand), np.nan)
            rel_all[readable] = relative_distance(plain[readable], params.relative_n, params.alpha)
            rel[wanted] = rel_all[wanted]
    tids = [cand[j][1] for j in range(k)]
    memorized = [bool(not np.isnan(tiled[j]) and is_memorized(float(tiled[j]), float(rel[j]), kind[j], params))
                 for j in range(k)]
    # hashes where they are evidence: every copy found (the others' come only from an index built --hashes)
    known = [train.hashes_of(t, compute=memorized[j] or kind[j] != "none") for j, t in enumerate(tids)]
    hd = {name: _hash_distances(gen.hashes[name], [h.get(name) for h in known]) if any(known) else
          np.full(len(known), -1, np.int64) for name in hashes.HASHES}
    rows = []
    for j, (rank, t, s) in enumerate(cand[:k]):
        jd = judged.get(j)
        available = not np.isnan(tiled[j])
        rows.append({
            "train_id": t, "train_path": tab["path"].iat[t], "train_caption": tab["caption"].iat[t],
            "rank": rank, "similarity": s, "tiled_l2": float(tiled[j]), "l2": float(plain[j]),
            "phash_distance": int(hd["phash"][j]), "dhash_distance": int(hd["dhash"][j]),
            "whash_distance": int(hd["whash"][j]), "relative_l2": float(rel[j]), "exact": bool(exact[j]),
            "pixels": "available" if available else "unavailable", "copy_kind": kind[j],
            "copied_share": jd.share if jd else 0.0, "copied_area": jd.area if jd else 0.0,
            "copy_mask": jd.mask_hex if jd else "", "copy_offset": list(map(float, jd.offset)) if jd else [],
            "template_members": [cand[order[m]][1] for m in jd.template_members] if jd else [],
            "memorized": memorized[j]})
    return rows


def _hash_distances(query: str, others: list) -> np.ndarray:
    """Hamming distances; -1 where the training image has no hash: its pixels are unavailable, or it
    is no copy and the index stores no hashes (built without ``--hashes``)."""
    out = np.full(len(others), -1, np.int64)
    have = [i for i, h in enumerate(others) if isinstance(h, str) and h]
    if have:
        out[have] = hashes.hamming_many(query, [others[i] for i in have])
    return out


def _measure(gen: Generation, cand: list, which: list[int], tiled: np.ndarray, plain: np.ndarray,
             exact: np.ndarray, train: TrainingImages, params: ScanParams) -> None:
    """Full-resolution distances for the candidates ``which`` (decoded through the cache), in place;
    an unreadable training image leaves NaN."""
    size = gen.pixels.shape[:2]
    arrays = {j: train.get(cand[j][1], size) for j in which if not exact[j]}
    ok = [j for j, a in arrays.items() if a is not None]
    if ok:
        tiled[ok], plain[ok] = distance.exact_distances(gen.pixels, [arrays[j] for j in ok], params.grid)
        exact[ok] = True
    for j, a in arrays.items():
        if a is None:
            tiled[j] = plain[j] = np.nan


def relative_distance(l2s: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Carlini et al.'s adaptive distance for every candidate: its L2 divided by alpha times the
    mean L2 to the n nearest *other* candidates. NaN when off (n = 0) or no other candidate exists.
    Below 1 means "much closer to this image than to the training images around it"."""
    out = np.full(len(l2s), np.nan)
    if n < 1 or len(l2s) < 2:
        return out
    for j in range(len(l2s)):
        others = np.sort(np.delete(l2s, j))[:n]
        out[j] = l2s[j] / (alpha * others.mean()) if others.mean() > 0 else np.inf
    return out


def is_memorized(tiled: float, relative: float, kind: str, params: ScanParams) -> bool:
    by_tiled = tiled < params.threshold
    by_relative = bool(relative < params.relative_threshold) if not np.isnan(relative) else False
    return {"copy": kind != "none", "tiled": by_tiled, "relative": by_relative, "either": by_tiled or by_relative,
            "both": by_tiled and by_relative}[params.criterion]


def _text(v) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _int_or_none(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)


def default_out(generations: Path) -> Path:
    generations = Path(generations)
    return generations if rundir.is_run_dir(generations) else generations.with_name(generations.name + "-scan")


def scan(generations: Path, params: ScanParams, out: Path | None = None, device: str = "auto",
         index: TrainingIndex | None = None, describe: Described | None = None) -> Iterator[Step | Note]:
    """Scan every shard not yet scanned, then write matches.parquet and summary.json.

    Yields a :class:`Note` for what the user should know (resume, incomplete run) and a
    :class:`Step` per shard as it goes.
    """
    validate_params(params)
    index = index or open_index(params.index)
    out = Path(out) if out else default_out(generations)
    work = out / rundir.SCAN / params.key(index)
    plan = plan_scan(generations, work)
    yield from map(Note, plan.notes)
    work.mkdir(parents=True, exist_ok=True)
    folders.mark_output(out)   # the folder is the scan's: a later scan may write here again
    rundir.write_json_atomic(work / "params.json", {**asdict(params), "embedder": index.embedder})
    embedder = None
    if describe is None and plan.todo:
        describe = described(index, params, device)
    train = TrainingImages(index)
    finished = len(plan.shards) - len(plan.todo)
    yield Step("scan", finished, len(plan.shards), "shard")
    for name, rows in plan.todo:
        embedder = embedder or index.load_embedder(device)
        matches, skipped = scan_shard(rows, index, embedder, train, params, describe=describe)
        rundir.write_json_atomic(work / f"{name}.skipped.json", skipped)
        if plan.current is not None:
            rundir.write_parquet_atomic(work / f"{name}.files.parquet", rows.rename(columns={"generation_path": "path"}))
        rundir.write_parquet_atomic(work / f"{name}.parquet", matches)
        finished += 1
        yield Step("scan", finished, len(plan.shards), "shard")
    missing = index.sizes_without_thumbs()
    if missing and params.criterion in ("tiled", "copy"):
        yield Note(f"index {index.path} holds no thumbnails for {', '.join(missing)} generations, so every candidate "
               f"was decoded to make its thumbnail (slower); rebuild it with `--thumb-size {missing[0]}` to store them")
    matches, skipped = _assemble(work, plan)
    marks_file = out / "watermarks.parquet"
    if marks_file.is_file():  # `imgextract watermarks` ran first: carry each generation's flag and box
        marks = pq.read_table(marks_file).to_pandas()[["path", "watermark", "brand", "box"]]
        marks = marks.rename(columns={"path": "generation_path", "watermark": "watermark",
                                      "brand": "watermark_brand", "box": "watermark_box"})
        matches = matches.merge(marks, on="generation_path", how="left")
    rundir.write_parquet_atomic(out / rundir.MATCHES, matches)
    summary = summarize(matches, plan.generations, skipped, params, index)
    summary["complete"] = plan.incomplete is None
    if plan.incomplete:
        summary["incomplete"] = plan.incomplete
    captions = out / rundir.CAPTIONS
    view = duplication_view(matches, index.table, pq.read_table(captions).to_pandas() if captions.is_file() else None)
    if view:
        summary["duplication"] = view
    families = family_view(matches, index.table, pd.read_parquet(captions) if captions.is_file() else None)
    if families:
        summary["template_families"] = families
    from imgextract.stages.watermarks import watermark_summary
    marks = watermark_summary(out, index.path)
    if marks:
        summary["watermarks"] = marks
    rundir.write_json_atomic(out / rundir.SUMMARY, summary)


def _assemble(work: Path, plan: ScanPlan) -> tuple[pd.DataFrame, list[dict]]:
    """All shards' matches and skipped lists; for a folder, each file's rows from the shard that
    scanned it as it is now (a changed file's older rows and a vanished file's rows are dropped)."""
    parts, skipped = [], []
    for name in plan.shards:
        m = pq.read_table(work / f"{name}.parquet").to_pandas()
        sk = rundir.read_json(work / f"{name}.skipped.json")
        if plan.current is not None:
            f = pq.read_table(work / f"{name}.files.parquet").to_pandas()
            valid = {p for p, sz, mt in zip(f["path"], f["size"], f["mtime_ns"]) if plan.current.get(p) == (sz, mt)}
            m = m[m["generation_path"].isin(valid)]
            sk = [x for x in sk if x["path"] in valid]
        parts.append(m)
        skipped += sk
    matches = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MATCH_COLUMNS)
    return matches, skipped + (plan.listed_bad or [])


def summarize(matches: pd.DataFrame, generations_total: int, skipped: list[dict], params: ScanParams,
              index: TrainingIndex) -> dict:
    """Counts per caption and per memorized training image; the numbers the report leads with."""
    mem = matches[matches["memorized"]]
    best = matches.sort_values("tiled_l2").drop_duplicates("generation_path")
    per_image = []
    table = getattr(index, "table", None)  # url and licence of each memorized image, when the index has them
    columns = table.columns if table is not None else []
    url_col, lic_col = role_column(columns, SOURCE_COLUMNS), role_column(columns, LICENSE_COLUMNS)
    for tid, grp in mem.groupby("train_id"):
        row = table.iloc[int(tid)] if table is not None else None
        strongest = grp.loc[(grp["copy_kind"].map(KIND_ORDER).fillna(3) * 10 + grp["copied_share"].fillna(1)).idxmax()] \
            if "copy_kind" in grp else grp.iloc[0]
        members = sorted({int(m) for ms in grp.get("template_members", pd.Series(dtype=object)).dropna() for m in ms})
        per_image.append({"train_id": int(tid), "train_path": grp["train_path"].iat[0],
                          "train_caption": grp["train_caption"].iat[0],
                          "generations": int(grp["generation_path"].nunique()),
                          "kind": str(strongest.get("copy_kind") or "whole"),
                          "best_share": float(grp["copied_share"].max()) if "copied_share" in grp else None,
                          "template_members": members,
                          "best_tiled_l2": float(grp["tiled_l2"].min()),
                          **({"url": _text(row[url_col])} if url_col else {}),
                          **({"license": _text(row[lic_col])} if lic_col else {})})
    per_caption = []
    if matches["caption_id"].notna().any():
        for cid, grp in best.groupby("caption_id", sort=True):
            gens = grp["generation_path"].nunique()
            m = mem[mem["caption_id"] == cid]["generation_path"].nunique()
            top = grp.sort_values("tiled_l2").iloc[0]
            per_caption.append({"caption_id": str(cid), "caption": grp["caption"].iat[0], "samples": int(gens),
                                "memorized_samples": int(m), "rate": m / gens if gens else 0.0,
                                "best_tiled_l2": float(top["tiled_l2"]),
                                "best_exact": bool(top["exact"]) if "exact" in grp else True})
    shares = descriptor_shares(matches)
    return {
        **({"sscd": shares} if shares else {}),
        "parameters": {**asdict(params), "index_path": str(index.path), "embedder": index.embedder.get("spec")},
        "generations": int(generations_total),
        "generations_scanned": int(matches["generation_path"].nunique()),
        "skipped": skipped,
        "memorized_generations": int(mem["generation_path"].nunique()),
        "copies": copy_counts(mem),
        "memorized_images": sorted(per_image, key=lambda r: r["best_tiled_l2"]),
        "per_caption": per_caption,
    }


def descriptor_shares(matches: pd.DataFrame, column: str = "sscd_similarity") -> dict | None:
    """The share of generations whose best candidate is over each of the papers' SSCD thresholds
    (Somepalli et al. and MemBench: 0.5; Wen et al.: 0.7 "memorized"), with Wilson intervals.
    The candidates are the k the index's embedder retrieved, so a pair it did not retrieve is not counted."""
    from imgextract.models.descriptors import SHARES
    if column not in matches.columns or not len(matches):
        return None
    best = matches.groupby("generation_path")[column].max()
    n = int(best.notna().sum())
    out = {"generations": n, "column": column, "candidates": "the k nearest by the index's embedder"}
    for t in SHARES:
        hits = int((best > t).sum())
        lo, hi = wilson_ci(hits, n)
        out[f"over_{t:g}"] = {"generations": hits, "share": hits / n if n else 0.0, "ci_low": lo, "ci_high": hi}
    return out


def strongest_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by copy kind (whole, template, portion), then the larger share, then tiled L2."""
    key = rows["copy_kind"].map(KIND_ORDER).fillna(0)
    return rows.assign(_k=-key, _s=-rows["copied_share"].fillna(0)).sort_values(
        ["_k", "_s", "tiled_l2"], kind="stable").drop(columns=["_k", "_s"])


def copy_counts(memorized: pd.DataFrame) -> dict:
    """Memorized generations per copy kind, each counted once at its strongest kind (whole > template > portion)."""
    counts = {k: 0 for k in ("whole", "portion", "template")}
    if "copy_kind" not in memorized or memorized.empty:
        return counts
    strongest = memorized.assign(_o=memorized["copy_kind"].map(KIND_ORDER).fillna(3)).groupby("generation_path")["_o"].max()
    names = {v: k for k, v in KIND_ORDER.items()}
    for o, n in strongest.value_counts().items():
        if names[int(o)] in counts:
            counts[names[int(o)]] = int(n)
    return counts


def family_view(matches: pd.DataFrame, train: pd.DataFrame, captions: pd.DataFrame | None) -> dict | None:
    """Template families of a toy's training set (its captions' ``family``): members, and how many of
    them a generation copied as a template."""
    if captions is None or "family" not in captions or captions["family"].isna().all():
        return None
    members = captions.dropna(subset=["family"])
    ids = train.loc[train["path"].isin(members["train_path"]), "id"].astype(int)
    hit = matches[matches["memorized"] & (matches.get("copy_kind") == "template")]
    copied = sorted(set(ids) & set(hit["train_id"].astype(int)))
    return {"families": int(members["family"].nunique()), "members": int(len(ids)), "members_copied": len(copied)}


def duplication_view(matches: pd.DataFrame, train: pd.DataFrame, captions: pd.DataFrame | None) -> list[dict]:
    """Extraction rate per duplication level, when each training image's copy count is known.

    Copy counts come from the index (a ``copies`` column of its source table) or else from the
    run's captions (``copies`` + ``train_path``, e.g. a toy model's ``copies.csv``). Per level:
    how many training images at least one generation memorized, and (for a run) the share of
    those captions' samples that were memorized. Carlini et al.'s duplication view.
    """
    copies = train["copies"] if "copies" in train.columns else pd.Series(np.nan, index=train.index)
    if captions is not None and "copies" in captions and captions["copies"].notna().any():
        by_path = captions.dropna(subset=["train_path", "copies"]).set_index("train_path")["copies"]
        by_path = by_path[~by_path.index.duplicated()]
        copies = copies.fillna(train["path"].map(by_path))
    if captions is not None and "family" in captions:  # template family members: seen once, but not single-copy
        copies = copies.where(~train["path"].isin(captions.dropna(subset=["family"])["train_path"]))
    if copies.isna().all():
        return []
    train = train.assign(copies=copies)
    memorized_ids = set(matches.loc[matches["memorized"], "train_id"].astype(int))
    sample_rate: dict[int, tuple[int, int]] = {}
    if captions is not None and captions["copies"].notna().any() and len(matches):
        per_gen = matches.groupby("generation_path").agg(caption_id=("caption_id", "first"),
                                                         memorized=("memorized", "any"))
        levels = captions[["caption_id", "copies"]]
        if "family" in captions:   # a family member's captions belong to no duplication level (as its image)
            levels = levels[captions["family"].isna()]
        per_gen = per_gen.merge(levels, on="caption_id", how="inner")
        for level, grp in per_gen.groupby("copies"):
            sample_rate[int(level)] = (int(grp["memorized"].sum()), len(grp))
    rows = []
    for level, grp in train.dropna(subset=["copies"]).groupby("copies"):
        level = int(level)
        hit = sum(int(i) in memorized_ids for i in grp["id"])
        row = {"copies": level, "images": len(grp), "memorized_images": hit, "image_rate": hit / len(grp)}
        if level in sample_rate:
            m, n = sample_rate[level]
            row.update(samples=n, memorized_samples=m, sample_rate=m / n if n else 0.0)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["copies"])
