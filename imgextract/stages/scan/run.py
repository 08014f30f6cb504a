"""The scan's driver: plan the shards, match each one, write its rows, assemble the results."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq

from imgextract import folders, rundir
from imgextract.index.store import TrainingIndex, open_index
from imgextract.progress import Note, Step
from imgextract.stages.scan.matching import Described, TrainingImages, described, scan_shard
from imgextract.stages.scan.params import ScanParams, validate_params
from imgextract.stages.scan.plan import default_out, plan_scan
from imgextract.stages.scan.summary import assemble, duplication_view, family_view, summarize


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
