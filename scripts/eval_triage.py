"""Held-out evaluation of triage scores across toy models the scores were not chosen on.

    python scripts/eval_triage.py --dev "100x1,10x4,1x25@0" \
        --models "100x1,10x4,1x25@1" "50x2,20x3,1x27@2" "100x1,10x4,1x27+faces@3" --samples 8 [--max-evals 8]
    python scripts/eval_triage.py --arch dit ...   # the same protocol on the transformer toy (SD3's MMDiT)

A model is ``SCHEDULE@SEED``, with ``+faces`` to add the 200 LFW faces that ship with
scikit-image as extra single-copy images (many more negatives). Each model is trained (or
reused from the cache) with the demo's fixed step counts, indexed, swept (SAMPLES samples per
training caption, 25 DDIM steps, guidance 3) and scanned. Ground truth: a caption is memorized
when most of its samples (rate > 0.5) are memorized by the scan's verdict *against that caption's
own training image* (the toy's copies.csv names it).

Pooled AUC: within a sweep triage only ranks one model's captions, so each score becomes its
within-model percentile rank, pooled over the held-out models that have memorized captions; the
"raw" column pools the scores as they are over every held-out model.

Scores (columns of `imgextract triage`, with their cost in UNet evaluations per caption at 4 seeds):
wen1/wen5 (Wen et al., first step / first 5 steps: 8/40), attn1/attn5 and end1 (cross-attention,
no extra calls), guide1 and agree1 (the first-step guidance on pure noise, after Asthana &
Belagiannis: no extra calls beyond wen1), edge (Webster's one-step edge consistency: 8), and
combinations A+B (mean of the two within-model percentile ranks). A leading "-" flips a sign.

The default is the score with the best pooled AUC on the dev models (the cheapest on a tie, within
--max-evals); the held-out table is printed after the choice is made. The figures of one
model are ``imgextract.app.triage_eval``'s, as ``imgextract triage-eval`` prints them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from imgextract import rundir
from imgextract.app.settings import CopyRule
from imgextract.errors import InputError
from imgextract.stats import roc_auc, tpr_at_fpr


# -- the held-out evaluation on toy models ------------------------------------------------------------------------

@dataclass
class ToySpec:
    """``SCHEDULE@SEED`` (``+faces``: the 200 LFW faces as extra single-copy images)."""

    schedule: str
    seed: int
    faces: bool
    arch: str = "unet"

    @classmethod
    def parse(cls, text: str, arch: str = "unet") -> "ToySpec":
        body, _, seed = text.partition("@")
        faces = body.endswith("+faces")
        return cls(body.removesuffix("+faces"), int(seed or 0), faces, arch)

    @property
    def steps(self) -> int:
        """The demo's denoiser steps for this architecture."""
        from imgextract.app.settings import DemoSettings
        return DemoSettings.unet_steps if self.arch == "unet" else DemoSettings.dit_steps

    @property
    def name(self) -> str:
        from imgextract.app.demo import DEMO_STEPS
        arch = "" if self.arch == "unet" else f"-{self.arch}"
        return (f"toy-{self.schedule.replace(',', '_')}{'-faces' if self.faces else ''}-32px-{DEMO_STEPS[0]}+"
                f"{self.steps}steps-seed{self.seed}{arch}")


TOY_SCORES = {  # name: (column, sign, family); family "noiseN" = Wen's calls over the first N steps
    "wen1": ("wen_score_1", 1, "noise1"), "wen5": ("wen_score_5", 1, "noise5"), "attn1": ("attn_score_1", 1, "noise1"),
    "attn5": ("attn_score_5", 1, "noise5"), "-attn1": ("attn_score_1", -1, "noise1"),
    "-attn5": ("attn_score_5", -1, "noise5"), "end1": ("attn_end_1", 1, "noise1"), "-end1": ("attn_end_1", -1, "noise1"),
    "-end5": ("attn_end_5", -1, "noise5"), "guide1": ("guide_score_1", 1, "noise1"),
    "agree1": ("guide_agreement_1", 1, "noise1"), "edge": ("edge_score", 1, "edge"),
}
TOY_CALLS = {"noise1": 8, "noise5": 40, "edge": 8}  # UNet evaluations per caption at 4 seeds
TOY_COMBOS = {"wen1+attn1": ("wen1", "attn1"), "wen1+-end1": ("wen1", "-end1"), "wen5+-end5": ("wen5", "-end5"),
              "wen1+edge": ("wen1", "edge"), "guide1+edge": ("guide1", "edge"), "guide1+wen1": ("guide1", "wen1"),
              "agree1+edge": ("agree1", "edge")}


def faces_folder(root: Path) -> Path:
    """The toy's built-in photographs followed by 200 LFW faces, each with a caption."""
    folder = root / "toy-images-with-faces"
    if (folder / "done").is_file():
        return folder
    from imgextract.demo.photos import faces
    from imgextract.demo.toy import DEFAULT_IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, caption, load) in enumerate(DEFAULT_IMAGES):
        load().save(folder / f"{i:03d}-{name}.png")
        (folder / f"{i:03d}-{name}.txt").write_text(caption)
    for j, (_, face) in enumerate(faces(200, 25)):
        stem = f"{len(DEFAULT_IMAGES) + j:03d}-face"
        face.save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(f"a grey portrait photo of person {j}")
    (folder / "done").write_text("")
    return folder


def sweep_toy(spec: ToySpec, samples: int, say=print) -> tuple[Path, Path]:
    """Train (or reuse) the model, index its training set, sweep and scan it; (model, run)."""
    from imgextract.app.commands import build_index, run_generation, run_scan, train_toy
    from imgextract.app.demo import DEMO_STEPS, cache_root
    from imgextract.demo.toy import ToyConfig
    from imgextract.stages.generate import SamplingConfig
    root = cache_root()
    model = root / spec.name
    if not (model / "toy.json").is_file():
        say(f"training {spec.name}")
        cfg = ToyConfig(duplicates=spec.schedule, seed=spec.seed, vae_steps=DEMO_STEPS[0], unet_steps=spec.steps,
                        arch=spec.arch)
        train_toy(model, cfg, faces_folder(root) if spec.faces else None)
    index = root / "eval-indexes" / spec.name
    if not (index / "embedder.json").is_file():
        build_index(model / "train", str(index), "pixel", overwrite=True, progress=False)
    run = root / "eval-runs" / f"{spec.name}-s{samples}"
    if not (run / "summary.json").is_file():
        cfg = SamplingConfig(samples=samples, batch_size=32, steps=25, guidance=3.0, seed=spec.seed, device="cpu")
        run_generation(model / "train" / "copies.csv", str(model), run, cfg, say=say)
        run_scan(run, str(index), run, k=5, threshold=CopyRule.threshold, grid=4, say=say)
    return model, run


def own_labels(run: Path, table: pd.DataFrame) -> pd.Series:
    """1 where most of a caption's samples are memorized against the caption's own training image."""
    m = pd.read_parquet(run / "matches.parquet", columns=["generation_path", "caption_id", "train_path", "memorized"])
    own = m.merge(table[["caption_id", "train_path"]], on="caption_id", suffixes=("", "_own"))
    own["hit"] = own["memorized"] & (own["train_path"] == own["train_path_own"])
    rate = own.groupby(["caption_id", "generation_path"])["hit"].any().groupby("caption_id").mean()
    return (table["caption_id"].map(rate).fillna(0) > 0.5).astype(int)


def toy_scores(spec: ToySpec, model: Path, run: Path) -> pd.DataFrame:
    """Every score for every caption of one toy model, with its labels (cached beside the run)."""
    from imgextract.models.pipelines import load_pipeline
    from imgextract.stages.triage import TriageParams, triage
    cached = run / "triage-eval.parquet"
    wanted = {col for col, _, _ in TOY_SCORES.values()}
    if cached.is_file():
        table = pd.read_parquet(cached)
        if wanted <= set(table.columns):
            table["label_any"] = (table["rate"] > 0.5).astype(int)
            table["label"] = own_labels(run, table)
            return table
    caps = pd.read_parquet(run / "captions.parquet")
    per = pd.DataFrame(json.loads((run / "summary.json").read_text())["per_caption"])[["caption_id", "rate"]]
    table = caps.merge(per, on="caption_id")
    loaded = load_pipeline(str(model), device="cpu")
    for steps in (1, 5):
        res = triage(loaded, table, TriageParams(steps=steps, samples=4, schedule_steps=25, guidance=3.0),
                     ("wen", "attn", "guide"))
        res = res[["caption_id", "wen_score", "attn_score", "attn_end", "guide_score", "guide_agreement"]]
        table = table.merge(res.add_suffix(f"_{steps}").rename(columns={f"caption_id_{steps}": "caption_id"}),
                            on="caption_id")
    edge = triage(loaded, table, TriageParams(steps=1, samples=4, guidance=3.0), ("edge",))
    table = table.merge(edge[["caption_id", "edge_score"]], on="caption_id")
    table["model"] = spec.name
    rundir.write_parquet_atomic(cached, pa.Table.from_pandas(table, preserve_index=False))
    table["label_any"] = (table["rate"] > 0.5).astype(int)
    table["label"] = own_labels(run, table)
    return table


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Each score as its within-model percentile rank (sign applied), plus the combinations."""
    out = table[["model", "caption_id", "label", "label_any"]].copy()
    for name, (col, sign, _) in TOY_SCORES.items():
        out[name] = (sign * table[col]).groupby(table["model"]).rank(pct=True)
        out[f"raw:{name}"] = sign * table[col]
    for name, parts in TOY_COMBOS.items():
        out[name] = out[list(parts)].mean(axis=1)
    return out


def toy_cost(name: str) -> int:
    """UNet evaluations per caption: each family of calls counted once (wen1 and guide1 share theirs)."""
    return sum(TOY_CALLS[f] for f in {TOY_SCORES[p][2] for p in TOY_COMBOS.get(name, (name,))})


def pooled_auc(table: pd.DataFrame, score: str, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Pooled AUC with a bootstrap interval, captions resampled within each model."""
    y, s = table["label"].to_numpy(), table[score].to_numpy()
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(table["model"].to_numpy() == m) for m in table["model"].unique()]
    boots = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        if 0 < y[idx].sum() < len(idx):
            boots.append(roc_auc(y[idx], s[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return roc_auc(y, s), float(lo), float(hi)


def toy_report(title: str, table: pd.DataFrame, names: list[str], say=print) -> dict[str, dict]:
    """Pooled figures over the models that have memorized captions; per-model AUCs beside."""
    models = list(table["model"].unique())
    with_pos = table[table.groupby("model")["label"].transform("sum") > 0]
    pos, neg = int(with_pos["label"].sum()), int((1 - with_pos["label"]).sum())
    say(f"\n{title}: {len(models)} model(s); pooled over the {with_pos['model'].nunique()} with memorized captions: "
        f"{pos} memorized, {neg} not")
    say(f"{'score':12s} {'UNet/caption':>12s} {'pooled AUC [95% CI]':>24s} {'TPR@1%FPR':>9s} {'TPR@3%FPR':>9s} "
        f"{'raw, all':>8s}  " + "  ".join(f"AUC m{i + 1}" for i in range(len(models))))
    out = {}
    for name in names:
        auc, lo, hi = pooled_auc(with_pos, name)
        per = []
        for m in models:
            sub = table[table["model"] == m]
            per.append(f"{roc_auc(sub['label'], sub[name]):6.3f}" if 0 < sub["label"].sum() < len(sub) else "   n/a")
        raw = f"{roc_auc(table['label'], table[f'raw:{name}']):8.3f}" if name in TOY_SCORES else "       -"
        t1, t3 = tpr_at_fpr(with_pos["label"], with_pos[name], 0.01), tpr_at_fpr(with_pos["label"], with_pos[name], 0.03)
        say(f"{name:12s} {toy_cost(name):12d} {auc:8.3f} [{lo:.3f}, {hi:.3f}]   {t1:9.3f} {t3:9.3f} {raw}  "
            + "  ".join(per))
        out[name] = {"auc": auc, "ci_low": lo, "ci_high": hi, "tpr_at_1pct_fpr": t1, "tpr_at_3pct_fpr": t3,
                     "unet_evals": toy_cost(name)}
    for i, m in enumerate(models):
        sub = table[table["model"] == m]
        say(f"  m{i + 1} = {m}: {int(sub['label'].sum())} of {len(sub)} captions memorized against their own image "
            f"({int(sub['label_any'].sum())} against any training image)")
    return out


def evaluate_toys(dev: list[str], held: list[str], samples: int = 8, max_evals: int | None = None,
                  say: Callable[[str], None] = lambda s: print(s, file=sys.stderr), arch: str = "unet") -> dict:
    """Choose the default on the dev models (best pooled AUC, the cheaper on a tie; within ``max_evals`` UNet
    evaluations per caption when given), then measure every score on the held-out models."""
    dev_specs, held_specs = [ToySpec.parse(t, arch) for t in dev], [ToySpec.parse(t, arch) for t in held]
    if {s.name for s in dev_specs} & {s.name for s in held_specs}:
        raise InputError("a held-out model is also a dev model", "hold out models the default is not chosen on")
    tables = {}
    for spec in dev_specs + held_specs:
        model, run = sweep_toy(spec, samples, say)
        tables[spec.name] = toy_scores(spec, model, run)
    names = [n for n in [*TOY_SCORES, *TOY_COMBOS] if max_evals is None or toy_cost(n) <= max_evals]
    dev_fig = toy_report("DEV (used to choose the default)", ranked(pd.concat([tables[s.name] for s in dev_specs],
                                                                                ignore_index=True)), names, print)
    best = max(names, key=lambda n: (round(dev_fig[n]["auc"], 3), -toy_cost(n)))
    print(f"\nchosen on dev: {best} (dev pooled AUC {dev_fig[best]['auc']:.3f}, {toy_cost(best)} UNet evaluations "
          "per caption)")
    held_fig = toy_report("HELD-OUT (never used for the choice)",
                          ranked(pd.concat([tables[s.name] for s in held_specs], ignore_index=True)), names, print)
    h = held_fig[best]
    top = max(held_fig, key=lambda n: held_fig[n]["auc"])
    print(f"\ndefault {best}: held-out pooled AUC {h['auc']:.3f} [{h['ci_low']:.3f}, {h['ci_high']:.3f}], "
          f"TPR@1%FPR {h['tpr_at_1pct_fpr']:.3f}, TPR@3%FPR {h['tpr_at_3pct_fpr']:.3f}; best held-out score would "
          f"have been {top} ({held_fig[top]['auc']:.3f})")
    return {"arch": arch, "dev": dev, "held_out": held, "chosen": best, "dev_figures": dev_fig,
            "held_out_figures": held_fig}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", nargs="+", default=["100x1,10x4,1x25@0"], help="models the default is chosen on")
    ap.add_argument("--models", nargs="+", required=True, help="held-out models: SCHEDULE@SEED[+faces]")
    ap.add_argument("--samples", type=int, default=8, help="sweep samples per caption (ground truth)")
    ap.add_argument("--max-evals", type=int, default=None, help="only scores within this many UNet evaluations")
    ap.add_argument("--arch", default="unet", choices=("unet", "dit"), help="the toys' denoiser (demo.toy_models)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    figures = evaluate_toys(args.dev, args.models, args.samples, args.max_evals, arch=args.arch)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
