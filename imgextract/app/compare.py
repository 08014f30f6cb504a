"""Compare audited runs of different models on the same captions (the researcher's view).

Unit of measurement: a caption *extracts* when at least one of its samples is memorized. Per
run: the extraction rate over captions with a bootstrap 95% interval (captions resampled),
the same per duplication level when copy counts are known, and which memorized training
images (identified by file content, so two indexes of the same images agree) are shared by
all runs or unique to one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.folders import check_out_folder, claim_out_folder
from imgextract.sources.images import sha256_file
from imgextract.stats import bootstrap_ci

KINDS = ("whole", "portion", "template")   # a caption extracts a kind when one of its samples is that copy


def _load(run: Path) -> dict:
    run = Path(run)
    for name in (rundir.RUN_JSON, rundir.MATCHES, rundir.SUMMARY, rundir.CAPTIONS):
        if not (run / name).is_file():
            raise InputError(f"run {run} has no {name}", "generate and scan it first (imgextract run or scan)")
    return {"path": run, "record": rundir.read_json(run / rundir.RUN_JSON),
            "summary": rundir.read_json(run / rundir.SUMMARY),
            "matches": pd.read_parquet(run / rundir.MATCHES), "captions": pd.read_parquet(run / rundir.CAPTIONS)}


def caption_outcomes(run: dict, captions: list[str], threshold: float | None) -> pd.DataFrame:
    """Per caption text: extracted (bool), copies, and the memorized training images' hashes."""
    m = run["matches"]
    memorized = m["tiled_l2"] < threshold if threshold is not None else m["memorized"]
    kinds = m["copy_kind"] if "copy_kind" in m and threshold is None else pd.Series(
        np.where(memorized, "whole", "none"), index=m.index)
    m = m.assign(memorized=memorized, copy_kind=kinds)
    caps = run["captions"].set_index("caption")
    rows = []
    for cap in captions:
        grp = m[m["caption"] == cap]
        hits = grp.loc[grp["memorized"], "train_path"].unique().tolist()
        rows.append({"caption": cap, "extracted": bool(len(hits)), "copies": caps["copies"].get(cap),
                     "images": hits, **{k: bool((grp["memorized"] & (grp["copy_kind"] == k)).any()) for k in KINDS}})
    return pd.DataFrame(rows)


def compare_runs(runs: list[Path], out: Path, intersection: bool = False, threshold: float | None = None,
                 n_boot: int = 2000, seed: int = 0) -> dict:
    if len(runs) < 2:
        raise InputError("compare needs at least two runs", "pass two or more run folders")
    check_out_folder(out)
    loaded = [_load(r) for r in runs]
    names = _names([r["path"] for r in loaded])
    sets = [set(r["captions"]["caption"]) for r in loaded]
    if any(s != sets[0] for s in sets[1:]) and not intersection:
        raise InputError(f"runs {', '.join(map(str, runs))} were audited on different caption sets",
                         "audit them on the same captions, or pass --intersection to compare the shared ones")
    thresholds = {(r["summary"]["parameters"]["threshold"], r["summary"]["parameters"]["grid"],
                   r["summary"]["parameters"].get("criterion", "tiled")) for r in loaded}
    if len(thresholds) > 1 and threshold is None:
        raise InputError(f"runs were scanned with different thresholds/grids/criteria {sorted(thresholds)}",
                         "re-scan them alike, or pass --threshold T to apply one tiled-L2 threshold to all")
    common = sorted(set.intersection(*sets))
    if not common:
        raise InputError("the runs share no caption", "compare runs audited on the same captions")
    digest: dict[str, str] = {}

    def ident(path: str) -> str:
        if path not in digest:
            digest[path] = sha256_file(Path(path)) if Path(path).is_file() else path
        return digest[path]

    models, levels, per_run_images = [], [], []
    for name, run in zip(names, loaded):
        oc = caption_outcomes(run, common, threshold)
        lo, hi = bootstrap_ci(oc["extracted"].to_numpy(), n_boot, seed)
        by_kind = {}
        for k in KINDS:
            klo, khi = bootstrap_ci(oc[k].to_numpy(), n_boot, seed)
            by_kind[k] = {"extracted": int(oc[k].sum()), "rate": float(oc[k].mean()), "ci_low": klo, "ci_high": khi}
        models.append({"run": name, "path": str(run["path"]), "model": run["record"]["model"]["id"],
                       "captions": len(oc), "extracted": int(oc["extracted"].sum()),
                       "rate": float(oc["extracted"].mean()), "ci_low": lo, "ci_high": hi, "by_kind": by_kind})
        if oc["copies"].notna().any():
            for level, grp in oc.dropna(subset=["copies"]).groupby("copies"):
                lo, hi = bootstrap_ci(grp["extracted"].to_numpy(), n_boot, seed)
                levels.append({"run": name, "copies": int(level), "captions": len(grp),
                               "extracted": int(grp["extracted"].sum()), "rate": float(grp["extracted"].mean()),
                               "ci_low": lo, "ci_high": hi})
        per_run_images.append({ident(p): p for imgs in oc["images"] for p in imgs})
    all_ids = set().union(*[set(d) for d in per_run_images])
    findings = []
    for i in sorted(all_ids):
        present = [n for n, d in zip(names, per_run_images) if i in d]
        path = next(d[i] for d in per_run_images if i in d)
        findings.append({"image": path, "sha256": i, "runs": present,
                         "shared": len(present) == len(names)})
    result = {"runs": models, "per_duplication_level": levels, "findings": findings,
              "captions_compared": len(common), "intersection": intersection, "threshold": threshold,
              "bootstrap": {"resamples": n_boot, "seed": seed, "interval": "95% percentile, captions resampled"}}
    out = claim_out_folder(out)
    rundir.write_json_atomic(out / "compare.json", result)
    rundir.write_parquet_atomic(out / "compare.parquet", pd.DataFrame(
        [{**{k: v for k, v in r.items() if k != "by_kind"},
          **{f"{k}_rate": r["by_kind"][k]["rate"] for k in KINDS}} for r in models]))
    from imgextract.report.pages import compare_page
    rundir.write_bytes_atomic(out / "compare.html", compare_page(result).encode())
    return result


def _names(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names
