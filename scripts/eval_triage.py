"""Measure the training-set-free methods on the toy model's known ground truth.

    python scripts/eval_triage.py --model .cache/imgextract/toy-...-seed0 --run runs/demo/run

Needs a toy model and a full audit run of its training captions (both made by `make demo`).
Positives: duplicated captions whose training image the full sweep found memorized;
negatives: single-copy captions. For each method it prints the ROC AUC, the UNet evaluations
spent and the wall time: Wen's noise-difference score and Webster's edge consistency (triage),
the clique test on the full sweep's samples, and the full sweep with the training set.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from imgextract.cliques import CliqueParams, run_cliques
from imgextract.pipelines import load_pipeline
from imgextract.triage import TriageParams, triage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--min-size", type=int, default=12)
    ap.add_argument("--delta", type=float, default=0.03,
                    help="clique edge threshold; 0.15 is tuned for 512px, and 32px toy images sit closer")
    args = ap.parse_args()

    caps = pd.read_parquet(args.run / "captions.parquet")
    summary = json.loads((args.run / "summary.json").read_text())
    memorized_paths = {r["train_path"] for r in summary["memorized_images"]}
    caps["memorized"] = caps["train_path"].isin(memorized_paths)
    caps["label"] = None
    caps.loc[(caps["copies"] > 1) & caps["memorized"], "label"] = 1
    caps.loc[caps["copies"] == 1, "label"] = 0
    labelled = caps.dropna(subset=["label"])
    print(f"{int((labelled['label'] == 1).sum())} duplicated-and-memorized captions, "
          f"{int((labelled['label'] == 0).sum())} single-copy captions")

    rows = []
    loaded = load_pipeline(str(args.model), device="cpu")
    for method, params in [("wen", TriageParams(steps=1, samples=args.samples, schedule_steps=25,
                                                guidance=args.guidance)),
                           ("edge", TriageParams(steps=1, samples=args.samples, guidance=args.guidance))]:
        t = time.perf_counter()
        res = triage(loaded, labelled, params, (method,))
        secs = time.perf_counter() - t
        m = labelled.merge(res[["caption_id", f"{method}_score", "unet_evals"]], on="caption_id")
        rows.append((f"{method} (triage)", roc_auc_score(m["label"].astype(int), m[f"{method}_score"]),
                     int(m["unet_evals"].sum()), secs))

    record = json.loads((args.run / "run.json").read_text())
    s = record["sampling"]
    sweep_evals = s["samples"] * s["steps"] * (2 if s["guidance"] > 1 else 1)
    loose = run_cliques(args.run, CliqueParams(delta=0.15, min_size=args.min_size)).merge(
        labelled[["caption_id", "label"]], on="caption_id")
    print(f"at delta 0.15: cliques >= {args.min_size} for {int(loose[loose.label == 1].flagged.sum())}/"
          f"{int((loose.label == 1).sum())} memorized and {int(loose[loose.label == 0].flagged.sum())}/"
          f"{int((loose.label == 0).sum())} single-copy captions")
    t = time.perf_counter()
    cl = run_cliques(args.run, CliqueParams(delta=args.delta, min_size=args.min_size))
    secs = time.perf_counter() - t
    m = labelled.merge(cl[["caption_id", "largest_clique", "flagged"]], on="caption_id")
    rows.append((f"clique, delta {args.delta} (sweep samples)", roc_auc_score(m["label"].astype(int), m["largest_clique"]),
                 sweep_evals * len(m), secs))
    pos, neg = m[m["label"] == 1], m[m["label"] == 0]
    clique_line = (f"at delta {args.delta}: cliques >= {args.min_size}: {int(pos['flagged'].sum())}/{len(pos)} memorized captions, "
                   f"{int(neg['flagged'].sum())}/{len(neg)} single-copy captions; largest clique sizes "
                   f"memorized {sorted(pos['largest_clique'].tolist())}, single max {int(neg['largest_clique'].max())}")

    per_cap = pd.DataFrame(summary["per_caption"])[["caption_id", "rate"]]
    m = labelled.merge(per_cap, on="caption_id")
    rows.append(("full sweep + training set", roc_auc_score(m["label"].astype(int), m["rate"]),
                 sweep_evals * len(m), float("nan")))

    print(f"{'method':34s} {'ROC AUC':>8} {'UNet evals':>11} {'wall s':>8}")
    for name, auc, evals, secs in rows:
        print(f"{name:34s} {auc:8.3f} {evals:11d} {secs:8.1f}")
    print(clique_line)


if __name__ == "__main__":
    main()
