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

from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq

from imgextract import folders, rundir
from imgextract.index.store import TrainingIndex, open_index
from imgextract.progress import Note, Step
from imgextract.stages.scan.matching import (CHUNK, Described, Generation, TrainingImages, as_generation,
                                             described, load_generation, match_generation, match_image,
                                             relative_distance, scan_shard)
from imgextract.stages.scan.params import (CRITERIA, EXACT_MARGIN, KIND_ORDER, MATCH_COLUMNS, MAX_GRID,
                                           SCAN_LAYOUT, ScanParams, is_memorized, validate_params)
from imgextract.stages.scan.plan import FOLDER_SHARD, ScanPlan, default_out, plan_scan
from imgextract.stages.scan.summary import (assemble, copy_counts, descriptor_shares,
                                            duplication_view, family_view, strongest_first, summarize)

__all__ = ["CHUNK", "CRITERIA", "Described", "EXACT_MARGIN", "FOLDER_SHARD", "Generation", "KIND_ORDER", "MATCH_COLUMNS",
           "MAX_GRID", "SCAN_LAYOUT", "ScanParams", "ScanPlan", "TrainingImages", "as_generation", "copy_counts",
           "default_out", "described", "descriptor_shares", "duplication_view", "family_view", "is_memorized",
           "load_generation", "match_generation", "match_image", "plan_scan", "relative_distance", "scan",
           "scan_shard", "strongest_first", "summarize", "validate_params"]

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
    matches, skipped = assemble(work, plan)
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
