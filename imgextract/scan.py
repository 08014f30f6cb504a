"""Scan: test every generation against its nearest training images.

For each generation: the index's embedder finds the k nearest training images, then each
candidate gets the near-duplicate test of :mod:`imgextract.distance` (tiled L2, plain L2)
and the perceptual-hash distances of :mod:`imgextract.hashes`. ``memorized`` is
``tiled_l2 < threshold``.

Work runs over shards of generations (a run's sample shards, or chunks of a plain folder);
each shard's matches land in ``scan/<params>/shard-NNNNN.parquet`` so a scan resumes, and
the same parameters never mix with others.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from imgextract import distance, hashes, rundir
from imgextract.embedders import Embedder
from imgextract.errors import InputError
from imgextract.index import TrainingIndex, open_index
from imgextract.sources import IMAGE_SUFFIXES, BadImage, open_rgb

FOLDER_SHARD = 512
MATCH_COLUMNS = ["generation_path", "caption_id", "caption", "sample_index", "seed", "train_id", "train_path",
                 "train_caption", "rank", "similarity", "tiled_l2", "l2", "phash_distance", "dhash_distance",
                 "whash_distance", "relative_l2", "memorized"]
CRITERIA = ("tiled", "relative", "either", "both")


@dataclass(frozen=True)
class ScanParams:
    index: str
    k: int = 10
    threshold: float = distance.DEFAULT_THRESHOLD
    grid: int = distance.DEFAULT_GRID
    relative_n: int = 50            # Carlini et al. §5.1: neighbours in the relative distance (0 = off)
    alpha: float = 0.5
    relative_threshold: float = 1.0
    criterion: str = "tiled"        # tiled | relative | either | both

    def key(self, embedder: dict) -> str:
        blob = json.dumps({**asdict(self), "embedder": embedder.get("spec"),
                           "weights": embedder.get("weights_fingerprint")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class TrainingImages:
    """Training images as arrays at a requested size, with a bounded cache."""

    def __init__(self, index: TrainingIndex, capacity: int = 256):
        self.paths = index.table["path"].tolist()
        self.capacity = capacity
        self._cache: OrderedDict = OrderedDict()

    def get(self, train_id: int, size: tuple[int, int]) -> np.ndarray | None:
        key = (train_id, size)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            arr = distance.to_array(open_rgb(Path(self.paths[train_id])), size)
        except BadImage:
            arr = None
        self._cache[key] = arr
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return arr


def generation_shards(generations: Path) -> list[tuple[str, pd.DataFrame]]:
    """(shard name, rows with generation_path and, for runs, caption/seed) for every shard."""
    generations = Path(generations)
    if not generations.exists():
        raise InputError(f"generations {generations} do not exist", "pass a run folder or a folder of images")
    if rundir.is_run_dir(generations):
        samples = rundir.read_samples(generations)
        if samples.empty:
            raise InputError(f"run {generations} has no finished sample shard",
                             "run `imgextract generate` into it first (it resumes)")
        return [(name, df.reset_index(drop=True)) for name, df in samples.groupby(
            samples["file"].str.split("/").str[1], sort=True)]
    if not generations.is_dir():
        raise InputError(f"generations {generations} is not a folder", "pass a run folder or a folder of images")
    files = sorted(str(p.resolve()) for p in generations.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"folder {generations} holds no images", "point at the folder of generated images")
    return [(rundir.shard_name(i // FOLDER_SHARD), pd.DataFrame({"generation_path": files[i:i + FOLDER_SHARD]}))
            for i in range(0, len(files), FOLDER_SHARD)]


def scan_shard(rows: pd.DataFrame, index: TrainingIndex, embedder: Embedder, train: TrainingImages,
               params: ScanParams) -> tuple[pd.DataFrame, list[dict]]:
    """Matches for one shard of generations, plus the generations that could not be read."""
    images, kept, skipped = [], [], []
    for i, path in enumerate(rows["generation_path"]):
        try:
            images.append(open_rgb(Path(path)))
            kept.append(i)
        except BadImage as bad:
            skipped.append({"path": str(bad.path), "reason": bad.reason})
    if not images:
        return pd.DataFrame(columns=MATCH_COLUMNS), skipped
    sims, ids = index.search(embedder.embed(images), max(params.k, params.relative_n + 1))
    out = []
    for row_i, image, sim_row, id_row in zip(kept, images, sims, ids):
        meta = rows.iloc[row_i]
        for m in match_image(image, sim_row, id_row, index, train, params):
            out.append({"generation_path": meta["generation_path"], "caption_id": meta.get("caption_id"),
                        "caption": meta.get("caption"), "sample_index": _int_or_none(meta.get("sample_index")),
                        "seed": _int_or_none(meta.get("seed")), **m})
    return pd.DataFrame(out, columns=MATCH_COLUMNS), skipped


def match_image(image, sim_row: np.ndarray, id_row: np.ndarray, index: TrainingIndex, train: TrainingImages,
                params: ScanParams) -> list[dict]:
    """The near-duplicate test of one image against its candidate training images (by rank)."""
    tab = index.table
    size = (image.height, image.width)
    gen = distance.to_array(image)
    gen_hashes = hashes.image_hashes(image)
    cand = [(rank, int(t), float(s)) for rank, (t, s) in enumerate(zip(id_row, sim_row)) if t >= 0]
    arrays = [train.get(t, size) for _, t, _ in cand]
    ok = [c for c, a in zip(cand, arrays) if a is not None]
    if not ok:
        return []
    stack = np.stack([a for a in arrays if a is not None])
    tiled = np.atleast_1d(distance.tiled_l2(gen[None], stack, params.grid))
    plain = np.atleast_1d(distance.l2(gen[None], stack))
    rel = relative_distance(plain, params.relative_n, params.alpha)
    ok = [c for c in ok if c[0] < params.k]  # a prefix: candidates are in rank order
    tids = [t for _, t, _ in ok]
    hd = {name: hashes.hamming_many(gen_hashes[name], tab[name].iloc[tids].tolist()) for name in hashes.HASHES}
    return [{"train_id": t, "train_path": tab["path"].iat[t], "train_caption": tab["caption"].iat[t],
             "rank": rank, "similarity": s, "tiled_l2": float(tiled[j]), "l2": float(plain[j]),
             "phash_distance": int(hd["phash"][j]), "dhash_distance": int(hd["dhash"][j]),
             "whash_distance": int(hd["whash"][j]), "relative_l2": float(rel[j]),
             "memorized": is_memorized(float(tiled[j]), float(rel[j]), params)}
            for j, (rank, t, s) in enumerate(ok)]


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


def is_memorized(tiled: float, relative: float, params: ScanParams) -> bool:
    by_tiled = tiled < params.threshold
    by_relative = bool(relative < params.relative_threshold) if not np.isnan(relative) else False
    return {"tiled": by_tiled, "relative": by_relative, "either": by_tiled or by_relative,
            "both": by_tiled and by_relative}[params.criterion]


def _int_or_none(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)


def default_out(generations: Path) -> Path:
    generations = Path(generations)
    return generations if rundir.is_run_dir(generations) else generations.with_name(generations.name + "-scan")


def scan(generations: Path, params: ScanParams, out: Path | None = None, device: str = "auto",
         index: TrainingIndex | None = None) -> Iterator[tuple[int, int]]:
    """Scan all shards (resuming finished ones), then write matches.parquet and summary.json.

    Yields (shards done, shards total) as it goes.
    """
    if params.k < 1 or params.grid < 1 or not 0 < params.threshold or params.relative_n < 0:
        raise InputError(f"scan parameters k={params.k} grid={params.grid} threshold={params.threshold} "
                         f"relative_n={params.relative_n}", "use k >= 1, grid >= 1, a positive threshold, n >= 0")
    if params.criterion not in CRITERIA:
        raise InputError(f"unknown criterion '{params.criterion}'", f"use one of {', '.join(CRITERIA)}")
    if params.criterion != "tiled" and params.relative_n < 1:
        raise InputError(f"criterion '{params.criterion}' needs the relative distance",
                         "give --relative-n >= 1 (default 50)")
    shards = generation_shards(generations)
    index = index or open_index(params.index)
    out = Path(out) if out else default_out(generations)
    work = out / rundir.SCAN / params.key(index.embedder)
    work.mkdir(parents=True, exist_ok=True)
    rundir.write_json_atomic(work / "params.json", {**asdict(params), "embedder": index.embedder})
    embedder = None
    train = TrainingImages(index)
    for n, (name, rows) in enumerate(shards):
        done_file = work / f"{name}.parquet"
        if not done_file.is_file():
            embedder = embedder or index.load_embedder(device)
            matches, skipped = scan_shard(rows, index, embedder, train, params)
            rundir.write_json_atomic(work / f"{name}.skipped.json", skipped)
            rundir.write_parquet_atomic(done_file, matches)
        yield n + 1, len(shards)
    matches = pd.concat([pq.read_table(work / f"{name}.parquet").to_pandas() for name, _ in shards],
                        ignore_index=True)
    skipped = [s for name, _ in shards for s in rundir.read_json(work / f"{name}.skipped.json")]
    generations_total = sum(len(r) for _, r in shards)
    marks_file = out / "watermarks.parquet"
    if marks_file.is_file():  # `imgextract watermarks` ran first: carry each generation's flag and box
        marks = pq.read_table(marks_file).to_pandas()[["path", "watermark", "brand", "box"]]
        marks = marks.rename(columns={"path": "generation_path", "watermark": "watermark",
                                      "brand": "watermark_brand", "box": "watermark_box"})
        matches = matches.merge(marks, on="generation_path", how="left")
    rundir.write_parquet_atomic(out / rundir.MATCHES, matches)
    summary = summarize(matches, generations_total, skipped, params, index)
    captions = out / rundir.CAPTIONS
    view = duplication_view(matches, index.table, pq.read_table(captions).to_pandas() if captions.is_file() else None)
    if view:
        summary["duplication"] = view
    from imgextract.watermarks import watermark_summary
    marks = watermark_summary(out, index.path)
    if marks:
        summary["watermarks"] = marks
    rundir.write_json_atomic(out / rundir.SUMMARY, summary)


def summarize(matches: pd.DataFrame, generations_total: int, skipped: list[dict], params: ScanParams,
              index: TrainingIndex) -> dict:
    """Counts per caption and per memorized training image; the numbers the report leads with."""
    mem = matches[matches["memorized"]]
    best = matches.sort_values("tiled_l2").drop_duplicates("generation_path")
    per_image = []
    for tid, grp in mem.groupby("train_id"):
        per_image.append({"train_id": int(tid), "train_path": grp["train_path"].iat[0],
                          "train_caption": grp["train_caption"].iat[0],
                          "generations": int(grp["generation_path"].nunique()),
                          "best_tiled_l2": float(grp["tiled_l2"].min())})
    per_caption = []
    if matches["caption_id"].notna().any():
        for cid, grp in best.groupby("caption_id", sort=True):
            gens = grp["generation_path"].nunique()
            m = mem[mem["caption_id"] == cid]["generation_path"].nunique()
            per_caption.append({"caption_id": str(cid), "caption": grp["caption"].iat[0], "samples": int(gens),
                                "memorized_samples": int(m), "rate": m / gens if gens else 0.0,
                                "best_tiled_l2": float(grp["tiled_l2"].min())})
    return {
        "parameters": {**asdict(params), "index_path": str(index.path), "embedder": index.embedder.get("spec")},
        "generations": int(generations_total),
        "generations_scanned": int(matches["generation_path"].nunique()),
        "skipped": skipped,
        "memorized_generations": int(mem["generation_path"].nunique()),
        "memorized_images": sorted(per_image, key=lambda r: r["best_tiled_l2"]),
        "per_caption": per_caption,
    }


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
    if copies.isna().all():
        return []
    train = train.assign(copies=copies)
    memorized_ids = set(matches.loc[matches["memorized"], "train_id"].astype(int))
    sample_rate: dict[int, tuple[int, int]] = {}
    if captions is not None and captions["copies"].notna().any() and len(matches):
        per_gen = matches.groupby("generation_path").agg(caption_id=("caption_id", "first"),
                                                         memorized=("memorized", "any"))
        per_gen = per_gen.merge(captions[["caption_id", "copies"]], on="caption_id", how="inner")
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
