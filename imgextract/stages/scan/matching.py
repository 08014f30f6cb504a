"""Matching: each generation against its nearest training images (distances, hashes, the copy verdict)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from threadpoolctl import threadpool_limits

from imgextract import copies, distance, hashes, replication
from imgextract.index.store import TrainingIndex
from imgextract.models.embedders import Embedder
from imgextract.sources.images import BadImage, open_rgb
from imgextract.stages.scan.params import MATCH_COLUMNS, ScanParams, is_memorized

class TrainingImages:
    """Training images as uint8 arrays at a requested size, with a bounded, thread-safe cache.

    Hashes: the index's, when built with ``--hashes``; otherwise computed here for the candidates
    that are found copies (:meth:`hashes_of`), from the decoded original, once per process.
    """

    HASHED = 65536  # hashes remembered (a few hundred bytes each)

    def __init__(self, index: TrainingIndex, capacity: int = 256):
        self.paths = index.table["path"].tolist()
        self.stored = {name: index.table[name].tolist() for name in hashes.HASHES if name in index.table}
        # published templates' masks (sources.templates): (file as published, region as text) per row
        regions = index.table["template_region"].tolist() if "template_region" in index.table else []
        self.masks = {i: text for i, text in enumerate(regions) if isinstance(text, str) and text}
        self.mask_names = index.table["template_mask"].tolist() if "template_mask" in index.table else []
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

    def softened(self, train_id: int, size: tuple[int, int]) -> replication.Softened | None:
        """The training image's side of the replication test at ``size``, blurred and prepared once per process."""
        def make():
            p = self.prepared(train_id, size)
            return None if p is None else replication.Softened(p)
        return self._remember(self._prepared, self.PREPARED, ("soft", train_id, size), make)

    def region(self, train_id: int, size: tuple[int, int]) -> np.ndarray | None:
        """A published template's fixed region fitted to ``size`` (None: the image has no mask)."""
        text = self.masks.get(train_id)
        if text is None:
            return None
        return self._remember(self._prepared, self.PREPARED, ("region", train_id, size),
                              lambda: copies.region_from_text(text, size))

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
            for rows_of in matched:
                grade(rows_of, describe.column)
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
    masked = [j for j in range(k) if cand[j][1] in train.masks]   # published templates: judged on their region
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
    could_copy[masked] = by_copy    # the screen reads the whole image; a template's copy agrees on its region only
    rep = np.full(len(cand), np.nan)   # the replication screen's score, from the thumbnails (no decode)
    rep_screen = np.zeros(len(cand), bool)
    with_thumb = sorted(j for j in found if j < k)
    if with_thumb:
        thumbs = np.stack([found[j] for j in with_thumb])
        rep[with_thumb] = replication.replication_scores(gen.blocks, thumbs)
        rep_screen[with_thumb] = replication.replication_screen(gen.blocks, thumbs, rep[with_thumb])
    _measure(gen, cand, [j for j in range(k) if not tiled[j] >= params.exact_limit or could_copy[j]], tiled, plain,
             exact, train, params)  # NaN (no thumbnail) is measured too
    # judged: what the screen let through, and every whole copy by Carlini's test (so none is missed unjudged)
    to_judge = [j for j in range(k) if exact[j] and (could_copy[j] or tiled[j] < params.threshold)]
    prepared = copies.Prepared(gen.pixels) if to_judge else None
    judged = {j: copies.judge(prepared, train.prepared(cand[j][1], size), rule) for j in to_judge}
    for j in masked:   # a published template's copy, beside the families found among the candidates
        if j in judged and judged[j].kind != "whole":
            other = train.prepared(cand[j][1], size)
            region = train.region(cand[j][1], prepared.pixels.shape[:2])
            on_region = copies.judge_masked(prepared, other, region, rule)
            if on_region.kind == "template":
                on_region.mse = copies.masked_mse(prepared.pixels, other.pixels, region)
                judged[j] = on_region
    copies.mark_templates(list(judged.values()))
    order = list(judged)
    kind = {j: judged[j].kind if j in judged else "none" for j in range(k)}
    # what the near-exact test refused but the thumbnails say is close: tested again, tolerant of distortions
    screened_in = [j for j in range(k) if kind[j] == "none" and rep_screen[j]]
    gen_side = replication.Softened(prepared or copies.Prepared(gen.pixels)) if screened_in else None
    replicated = {j for j in screened_in if (p := train.softened(cand[j][1], size)) is not None
                  and replication.replicates(gen_side, p, rule).kind != "none"}
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
            "template_mask": train.mask_names[t] if jd and jd.masked else "",
            "template_mse": jd.mse if jd else float("nan"),
            "replication": replication.replication_level(kind[j], j in replicated) if available else "none",
            "replication_score": float(rep[j]),
            "memorized": memorized[j]})
    return rows


def grade(rows: list[dict], column: str | None = None) -> None:
    """Each row's replication level again, now that the descriptor's similarity (``column``) is known."""
    for row in rows:
        if row["pixels"] == "available":
            row["replication"] = replication.replication_level(row["copy_kind"], row["replication"] == "replication",
                                                          row.get(column) if column else None)


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


def _int_or_none(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
