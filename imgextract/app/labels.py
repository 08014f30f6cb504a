"""`labels verify`: a published label file re-verified on a model, per prompt and per seed.

In order: the label file and the index are read and checked (before the model loads), every labelled
prompt's samples are drawn and tested where they are drawn (a sweep into ``OUT/run``: resumable by
shard, the published seeds first), the scan is assembled, and the per-prompt table, the cleaned labels
and the confusion table are written (``OUT/verified.parquet``, ``OUT/verify.json``). A killed verify
resumes at its first unfinished shard and ends at the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.folders import check_out_folder, claim_out_folder

RUN = "run"


def verify_labels(labelled: Path, model: str, index: str, out: Path, cfg, k: int | None = None,
                  descriptor: str | None = None, say: Callable[[str], None] = print) -> dict:
    """Draw ``cfg.samples`` seeds of every labelled prompt, judge each sample with the copy verdict against the
    index, and write the verified table; returns verify.json's content."""
    from imgextract.app.commands import run_scan, run_sweep
    from imgextract.index.store import open_index
    from imgextract.models.descriptors import resolved_spec
    from imgextract.sources.tables import read_captions
    from imgextract.stages import labels
    from imgextract.stages.scan import ScanParams, described
    from imgextract.stages.tester import SweepSettings, align_shard_size
    labelled, out = Path(labelled), Path(out)
    table = read_captions(labelled)
    if "memorized" not in table.column_names:
        raise InputError(f"{labelled} carries no published labels (no overfit_type/type column, no memorized column)",
                         "give a published label file (Webster's ground truth, Jeon's jsonl, NeMo's CSV) or a "
                         "table with a memorized column")
    check_out_folder(out)
    idx = open_index(index)
    params = ScanParams(index=str(Path(idx.path).resolve()), k=k or ScanParams.k,
                        descriptor=resolved_spec(descriptor) if descriptor else None)
    described(idx, params)                    # an index without the descriptor is refused now, not in a worker
    cfg.shard_size = align_shard_size(cfg.shard_size, cfg.samples)
    claim_out_folder(out)
    run = out / RUN
    run_sweep(labelled, model, run, cfg, SweepSettings(params, None, "all"), caption_table=table, say=say)
    run_scan(run, params.index, run, params.k, params.threshold, params.grid, say=say,
             **({"descriptor": params.descriptor} if params.descriptor else {}))
    manifests = pd.concat([pd.read_parquet(p) for p in sorted((run / rundir.SAMPLES).glob("shard-*.parquet"))],
                          ignore_index=True)
    verified = labels.verify_table(table.to_pandas(), manifests, pd.read_parquet(run / "matches.parquet"),
                                   open_index(params.index).table)
    summary = {"labelled": str(labelled.resolve()), "model": model, "index": params.index,
               "seeds_per_prompt": cfg.samples, "confusion": labels.confusion(verified),
               "agreement": labels.agreement(verified),
               "columns": list(labels.VERIFIED), "table": labels.TABLE}
    rundir.write_parquet_atomic(out / labels.TABLE, verified)
    rundir.write_json_atomic(out / labels.SUMMARY, summary)
    return summary


def summary_lines(summary: dict, out: Path) -> list[str]:
    """What the command prints: the confusion table, the agreement, where the table is."""
    from imgextract.stages.labels import confusion_text
    a = summary["agreement"]
    return [confusion_text(summary["confusion"]),
            f"published labels hold on {a['agree']} of {a['verifiable']} verifiable prompts "
            f"({a['published_memorized_verified_none']} labelled memorized drew no copy, "
            f"{a['published_clean_verified_copy']} labelled clean drew one); {len(a['unreachable'])} unreachable "
            "(the index lacks their original)",
            f"per prompt: {Path(out) / summary['table']}"]
