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
from imgextract.sources import BadImage, list_image_files, open_rgb

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

    def key(self, index: TrainingIndex) -> str:
        """Same parameters on the same index (however it was named) → the same scan folder."""
        params = {**asdict(self), "index": str(Path(index.path).resolve())}
        blob = json.dumps({**params, "layout": SCAN_LAYOUT, "embedder": index.embedder.get("spec"),
                           "weights": index.embedder.get("weights_fingerprint")}, sort_keys=True)
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


MAX_GRID = 64
SCAN_LAYOUT = 2  # folder shards keyed by file (path, size, mtime); older scan folders are not mixed in


def validate_params(params: ScanParams) -> None:
    """Every scan parameter checked before any work (and before the index is opened)."""
    if params.k < 1:
        raise InputError(f"-k {params.k}", "test at least one candidate (-k 1 or more; 10 is the default)")
    if not 1 <= params.grid <= MAX_GRID:
        raise InputError(f"--grid {params.grid}", f"use a tile grid from 1 to {MAX_GRID} per side (4 is Carlini et al.'s)")
    if not 0 < params.threshold <= 1:
        raise InputError(f"--threshold {params.threshold}", "use a tiled-L2 threshold in (0, 1]; 0.15 is the default")
    if params.relative_n < 0:
        raise InputError(f"--relative-n {params.relative_n}", "use 0 (off) or a positive number of neighbours")
    if params.alpha <= 0:
        raise InputError(f"--alpha {params.alpha}", "use a positive alpha (0.5 is Carlini et al.'s)")
    if params.criterion not in CRITERIA:
        raise InputError(f"unknown criterion '{params.criterion}'", f"use one of {', '.join(CRITERIA)}")
    if params.criterion != "tiled" and params.relative_n < 1:
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


def scan_shard(rows: pd.DataFrame, index: TrainingIndex, embedder: Embedder, train: TrainingImages,
               params: ScanParams) -> tuple[pd.DataFrame, list[dict]]:
    """Matches for one shard of generations, plus the generations that could not be read."""
    images, kept, skipped = [], [], []
    for i, path in enumerate(rows["generation_path"]):
        try:
            images.append(open_rgb(Path(path), min_side=params.grid))
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
         index: TrainingIndex | None = None) -> Iterator[tuple[int, int] | str]:
    """Scan every shard not yet scanned, then write matches.parquet and summary.json.

    Yields a line of text for what the user should know (resume, incomplete run) and
    (shards done, shards total) as it goes.
    """
    validate_params(params)
    index = index or open_index(params.index)
    out = Path(out) if out else default_out(generations)
    work = out / rundir.SCAN / params.key(index)
    plan = plan_scan(generations, work)
    yield from plan.notes
    work.mkdir(parents=True, exist_ok=True)
    rundir.write_json_atomic(work / "params.json", {**asdict(params), "embedder": index.embedder})
    embedder = None
    train = TrainingImages(index)
    finished = len(plan.shards) - len(plan.todo)
    yield finished, len(plan.shards)
    for name, rows in plan.todo:
        embedder = embedder or index.load_embedder(device)
        matches, skipped = scan_shard(rows, index, embedder, train, params)
        rundir.write_json_atomic(work / f"{name}.skipped.json", skipped)
        if plan.current is not None:
            rundir.write_parquet_atomic(work / f"{name}.files.parquet", rows.rename(columns={"generation_path": "path"}))
        rundir.write_parquet_atomic(work / f"{name}.parquet", matches)
        finished += 1
        yield finished, len(plan.shards)
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
    from imgextract.watermarks import watermark_summary
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
