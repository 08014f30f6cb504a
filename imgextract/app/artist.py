"""The artist's check as one call: the work's copies in the training index, its sampling, the scan, the
verdicts and the reconstruction search, in that order (what each verdict means: ``stages.artist``)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.images import open_rgb
from imgextract.stages.settings import CheckSettings, SamplingConfig
from imgextract.stages.artist import (EXTRA_CAP, TRAINING_K, WorkVerdict, null_images, prompts_for, read_works,
                                      sampling_plan, verdicts, work_id)
from imgextract.copies import CopyRule


def find_training_copies(works: list[Path], index, threshold: float = CopyRule.threshold,
                         min_share: float = CopyRule.min_share,
                         say=print) -> list[list[dict] | None]:
    """Per work, its pixel-verified copies in the training index (strongest first), or None when the
    index cannot show pixels (an embeddings-only index: membership is then not tested, never "no")."""
    from imgextract.app.guard import Guard
    from imgextract.sources.tables import LICENSE_COLUMNS, SOURCE_COLUMNS, role_column
    from imgextract.stages.scan import KIND_ORDER
    guard = Guard(index, k=min(TRAINING_K, max(1, len(index.table))), threshold=threshold, min_share=min_share)
    tab = index.table
    src, lic = role_column(tab.columns, SOURCE_COLUMNS), role_column(tab.columns, LICENSE_COLUMNS)

    def text(row, col):
        v = row[col] if col else None
        return None if v is None or (isinstance(v, float) and v != v) else str(v)

    out = []
    for w in works:
        image = open_rgb(w, min_side=4)
        sims, ids = guard.index.search(guard.embedder.embed([image]), guard.params.k)
        matches = guard.match(image, sims[0], ids[0])
        if matches and all(m["pixels"] == "unavailable" for m in matches):
            out.append(None)
            continue
        hits = sorted((m for m in matches if m["memorized"]),
                      key=lambda m: (-KIND_ORDER[m["copy_kind"]], -m["copied_share"], m["tiled_l2"]))
        copies = []
        for m in hits:
            row = tab.iloc[m["train_id"]]
            copies.append({"id": int(m["train_id"]), "url": text(row, src), "caption": text(row, "caption"),
                           "license": text(row, lic), "kind": m["copy_kind"], "share": round(float(m["copied_share"]), 4),
                           "tiled_l2": round(float(m["tiled_l2"]), 4), "path": str(m["train_path"])})
        say(f"{w.name}: {len(copies)} training cop{'y' if len(copies) == 1 else 'ies'} in index {index.path.name}")
        out.append(copies)
    return out


def reconstruct_unreproduced(loaded, record: dict, result: list[WorkVerdict], calibration, budget, out: Path,
                             say=print) -> dict | None:
    """``--reconstruct``: the search on every work no prompt reproduced, and once on the calibration images;
    the samples are kept under ``reconstruct/`` with their seeds."""
    from imgextract.progress import show
    from imgextract.stages.generate import png_bytes
    from imgextract.stages.reconstruct import meaning, null_rate, reconstruct
    todo = [v for v in result if v.verdict != "reproduced"]
    if not todo:
        return None
    s = record["sampling"]
    size, steps, guidance = (s["height"], s["width"]), s["steps"], s["guidance"]
    say(f"reconstruction search on {len(calibration)} calibration image(s) first: the null rate of this budget")
    null = show(null_rate(loaded, calibration, budget, steps, guidance, size), say)
    folder = out / "reconstruct"
    folder.mkdir(exist_ok=True)
    for v in todo:
        wid = work_id(next(i for i, w in enumerate(result) if w is v))
        say(f"reconstruction search on {Path(v.work).name}")
        attempt = show(reconstruct(loaded, open_rgb(Path(v.work), min_side=4), budget, steps, guidance, size, wid), say)
        paths = []
        for i, (im, seed) in enumerate(zip(attempt.images, attempt.seeds)):
            path = folder / f"{wid}_s{i:03d}.png"
            rundir.write_bytes_atomic(path, png_bytes(im, {"work": v.work, "search": "reconstruct", "seed": seed,
                                                          "budget": budget.record(), "steps": steps,
                                                          "guidance": guidance}))
            paths.append(str(path.resolve()))
        best = paths[attempt.seeds.index(attempt.seed)] if attempt.seed is not None else None
        v.reconstruction = {**attempt.record(), "search_steps": budget.steps, "samples": budget.samples,
                            "budget": budget.record(), "best_path": best, "sample_paths": paths,
                            "null": {k: null[k] for k in ("images", "reconstructed", "rate", "ci_low", "ci_high")},
                            "meaning": meaning(attempt.reconstructed, null)}
    return null


def run_check(works_path: Path, model: str, out: Path, check: CheckSettings | None = None,
              sampling: SamplingConfig | None = None, say=print) -> tuple[list[WorkVerdict], Path]:
    """The whole check; every argument is checked (model loaded, index opened, calibration images read)
    before anything is written."""
    from imgextract.app.commands import build_index, require_family, run_generation, run_scan
    from imgextract.models.families import require
    from imgextract.folders import check_out_folder, claim_out_folder
    from imgextract.index.store import is_index_dir, open_index
    from imgextract.models.descriptors import load_descriptor, resolved_spec, same_descriptor
    from imgextract.models.pipelines import load_pipeline
    from imgextract.progress import drain
    from imgextract.report.pages import write_check_page
    from imgextract.stages.generate import prepare_run
    from imgextract.stages.watermarks import Detector, run_watermarks

    index = Path(out) / "index"
    if index.exists() and not is_index_dir(index):
        raise InputError(f"{index} exists and is not an imgextract index; refusing to replace it",
                         "choose another --out folder")
    check_out_folder(Path(out))
    works, unreadable = read_works(works_path)
    for b in unreadable:
        say(f"unreadable work {b['path']}: {b['reason']} (listed, not checked)")
    check, sampling = check or CheckSettings(), sampling or SamplingConfig()
    prompts = prompts_for(works, check.caption, check.captions, say=say)
    cfg = replace(sampling, samples=check.samples, batch_size=min(sampling.batch_size, check.samples * len(works)))
    device, dtype, reconstruct, threshold = cfg.device, cfg.dtype, check.reconstruct, check.threshold
    trained_on = open_index(check.index) if check.index is not None else None
    descriptor = resolved_spec(check.descriptor)
    wanted = load_descriptor(descriptor, device).record() if descriptor else None
    calibration = null_images(check.null, reconstruct, say) if reconstruct or check.null is not None else []
    if reconstruct:   # refused before the weights load wherever the files tell the family
        require_family(model, "check --reconstruct", "drop --reconstruct for this model")
    loaded = load_pipeline(model, device, dtype)
    if reconstruct:
        require(loaded.family, "check --reconstruct", model, "drop --reconstruct for this model")
    for source in sorted({s for _, s in prompts}):
        if source in ("file name", "sidecar text"):
            n = sum(s == source for _, s in prompts)
            say(f"no caption given: prompting {n} work(s) with their {source}"
                + (" (after the captions of their training copies, if any)" if trained_on is not None else ""))
    training = find_training_copies(works, trained_on, threshold, say=say) if trained_on is not None else None
    plans = [sampling_plan(i, own, training[i] if training else None, check.samples) for i, own in enumerate(prompts)]
    rows = [(p, i) for i, plan in enumerate(plans) for p in plan]
    out = Path(out)
    table = pa.table({"caption_id": [p.caption_id for p, _ in rows], "caption": [p.prompt for p, _ in rows],
                      "train_path": [str(works[i]) for _, i in rows],
                      "copies": pa.array([None] * len(rows), pa.int64()),
                      "samples": pa.array([p.samples for p, _ in rows], pa.int64())})
    run = out / "run"
    loaded, _, _ = prepare_run(Path(str(works_path)), model, run, cfg, captions=table, write=False, loaded=loaded)
    claim_out_folder(out)
    stored = (rundir.read_json(index / "embedder.json").get("descriptors") or {}).get("sscd") \
        if is_index_dir(index) else None
    if not is_index_dir(index) or pd.read_parquet(index / "images.parquet")["path"].tolist() != [str(w) for w in works] \
            or (wanted is not None and not same_descriptor(stored, wanted)):
        listing = out / "works.csv"
        out.mkdir(parents=True, exist_ok=True)
        with open(listing, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "caption"])
            writer.writerows([str(w), p] for w, (p, _) in zip(works, prompts))
        build_index(listing, str(index), "pixel", overwrite=True, progress=False, hashes=True,  # "close" reads them
                    descriptor=descriptor)
    run_generation(Path(str(works_path)), model, run, cfg, loaded=loaded, caption_table=table, say=say)
    run_scan(run, str(index), run, k=min(10, len(works)), threshold=threshold, grid=4, relative_n=0, say=say,
             descriptor=descriptor)
    drain(run_watermarks(run, run, Detector()))
    result = verdicts(run, works, prompts, plans, training)
    record = rundir.read_json(run / rundir.RUN_JSON)
    calibrated = None
    if reconstruct:
        calibrated = reconstruct_unreproduced(loaded, record, result, calibration, check.budget, out, say)
    result += [WorkVerdict(b["path"], "", "", "unreadable", None, None, 0, b["reason"]) for b in unreadable]
    rundir.write_json_atomic(out / "check.json", {
        "model": record["model"], "sampling": record["sampling"], "threshold": threshold,
        "training_index": str(trained_on.path) if trained_on is not None else None,
        "budget": f"samples x (1 + min(training copies, {EXTRA_CAP})) per work",
        "null_calibration": calibrated,
        "works": [v.record() for v in result]})
    page = write_check_page(out, run, result, [work_id(i) for i in range(len(result))], trained_on)
    return result, page
