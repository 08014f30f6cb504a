"""Compare audited runs of different models on the same captions (the researcher's view).

Unit of measurement: a caption *extracts* when at least one of its samples is memorized. Per
run: the extraction rate over captions with a bootstrap 95% interval (captions resampled),
the same per duplication level when copy counts are known, and which memorized training
images (identified by file content, so two indexes of the same images agree) are shared by
all runs or unique to one.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources import sha256_file


def _load(run: Path) -> dict:
    run = Path(run)
    for name in (rundir.RUN_JSON, rundir.MATCHES, rundir.SUMMARY, rundir.CAPTIONS):
        if not (run / name).is_file():
            raise InputError(f"run {run} has no {name}", "generate and scan it first (imgextract run or scan)")
    return {"path": run, "record": rundir.read_json(run / rundir.RUN_JSON),
            "summary": rundir.read_json(run / rundir.SUMMARY),
            "matches": pd.read_parquet(run / rundir.MATCHES), "captions": pd.read_parquet(run / rundir.CAPTIONS)}


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean, resampling the values with replacement."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def caption_outcomes(run: dict, captions: list[str], threshold: float | None) -> pd.DataFrame:
    """Per caption text: extracted (bool), copies, and the memorized training images' hashes."""
    m = run["matches"]
    memorized = m["tiled_l2"] < threshold if threshold is not None else m["memorized"]
    m = m.assign(memorized=memorized)
    caps = run["captions"].set_index("caption")
    rows = []
    for cap in captions:
        grp = m[m["caption"] == cap]
        hits = grp.loc[grp["memorized"], "train_path"].unique().tolist()
        rows.append({"caption": cap, "extracted": bool(len(hits)), "copies": caps["copies"].get(cap),
                     "images": hits})
    return pd.DataFrame(rows)


def compare_runs(runs: list[Path], out: Path, intersection: bool = False, threshold: float | None = None,
                 n_boot: int = 2000, seed: int = 0) -> dict:
    if len(runs) < 2:
        raise InputError("compare needs at least two runs", "pass two or more run folders")
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
        models.append({"run": name, "path": str(run["path"]), "model": run["record"]["model"]["id"],
                       "captions": len(oc), "extracted": int(oc["extracted"].sum()),
                       "rate": float(oc["extracted"].mean()), "ci_low": lo, "ci_high": hi})
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json_atomic(out / "compare.json", result)
    rundir.write_parquet_atomic(out / "compare.parquet", pd.DataFrame(models))
    rundir.write_bytes_atomic(out / "compare.html", _html(result).encode())
    return result


def _names(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    return names


def _plot(result: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2 if result["per_duplication_level"] else 1, figsize=(9, 3.2), dpi=100,
                             squeeze=False)
    runs = result["runs"]
    ax = axes[0][0]
    x = np.arange(len(runs))
    ax.bar(x, [r["rate"] for r in runs], yerr=[[r["rate"] - r["ci_low"] for r in runs],
                                               [r["ci_high"] - r["rate"] for r in runs]], capsize=4)
    ax.set_xticks(x, [r["run"] for r in runs], fontsize=8)
    ax.set_ylabel("captions extracted")
    ax.set_ylim(0, 1.05)
    if result["per_duplication_level"]:
        ax = axes[0][1]
        df = pd.DataFrame(result["per_duplication_level"])
        markers = "osD^vP*X"
        for n, (name, grp) in enumerate(df.groupby("run")):
            grp = grp.sort_values("copies")
            shift = 1 + 0.06 * (n - (df["run"].nunique() - 1) / 2)  # offset on the log axis: coinciding lines stay visible
            ax.errorbar(grp["copies"] * shift, grp["rate"], yerr=[grp["rate"] - grp["ci_low"],
                                                                  grp["ci_high"] - grp["rate"]],
                        marker=markers[n % len(markers)], linestyle="--" if n % 2 else "-", capsize=3, label=name,
                        alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("copies in training set")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
    from imgextract.report import figure_uri
    return figure_uri(fig)


def _rate(r: dict, unit: str) -> str:
    """A rate with its interval, or why there is none: one item cannot estimate a spread."""
    if r["captions"] < 2:
        return f"{r['rate']:.3f} ({r['captions']} {unit}: no interval)"
    return f"{r['rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def _html(result: dict) -> str:
    from imgextract.report import page, thumbnail_uri
    e = html.escape
    rows = "".join(f"<tr><td>{e(r['run'])}</td><td>{e(str(r['model']))}</td><td>{r['extracted']}/{r['captions']}</td>"
                   f"<td>{_rate(r, 'caption')}</td></tr>" for r in result["runs"])
    lv = "".join(f"<tr><td>{e(r['run'])}</td><td>{r['copies']}</td><td>{r['extracted']}/{r['captions']}</td>"
                 f"<td>{_rate(r, 'image')}</td></tr>" for r in result["per_duplication_level"])
    fd = "".join(f"<tr><td><img src='{thumbnail_uri(f['image'])}' alt='memorized training image' "
                 f"style='width:96px;height:96px;object-fit:contain'></td><td><code>{e(Path(f['image']).name)}</code></td>"
                 f"<td>{e(', '.join(f['runs']))}</td>"
                 f"<td>{'all runs' if f['shared'] else 'this run only' if len(f['runs']) == 1 else 'some runs'}</td></tr>"
                 for f in result["findings"])
    body = [f"<p>{result['captions_compared']} captions; a caption is extracted when one of its samples is "
            f"memorized; 95% bootstrap intervals over captions.</p>",
            f"<table class=sortable><thead><tr><th>run</th><th>model</th><th>extracted</th><th>rate [95% CI]</th>"
            f"</tr></thead><tbody>{rows}</tbody></table><img src='{_plot(result)}' alt='rates'>"]
    if lv:
        body.append(f"<h2>Per duplication level</h2><table class=sortable><thead><tr><th>run</th><th>copies</th>"
                    f"<th>extracted</th><th>rate [95% CI]</th></tr></thead><tbody>{lv}</tbody></table>")
    body.append(f"<h2>Memorized training images</h2><table class=sortable><thead><tr><th>image</th><th>file</th>"
                f"<th>reproduced by</th><th>shared</th></tr></thead><tbody>{fd}</tbody></table>")
    return page("Memorization by model", body)
