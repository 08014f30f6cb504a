"""Held-out evaluation of triage scores across toy models the scores were not chosen on.

    python scripts/eval_triage.py --dev "100x1,10x4,1x25@0" \
        --models "100x1,10x4,1x25@1" "50x2,20x3,1x27@2" "100x1,10x4,1x27+faces@3" --samples 8

A model is ``SCHEDULE@SEED``, with ``+faces`` to add the 200 LFW faces that ship with
scikit-image as extra single-copy images (many more negatives). Each model is trained (or
reused from the cache) with the demo's fixed step counts, indexed, swept (SAMPLES samples per
training caption, 25 DDIM steps, guidance 3) and scanned. Ground truth: a caption is memorized
when most of its samples (rate > 0.5) are memorized by the scan's verdict *against that caption's
own training image* (the toy's copies.csv names it). The looser "any training image" verdict is
printed too: on 32 px grey faces it calls generic faces memorized (each within 0.15 of some
other face) although almost none of those samples copies its own caption's image.

Pooled AUC: within a sweep triage only ranks one model's captions, so each score becomes its
within-model percentile rank, pooled over the held-out models that have memorized captions; the
"raw" column pools the scores as they are over every held-out model (meaningful for bounded
scores such as edge consistency), so a model without memorized captions still adds negatives.

Scores (each a column of `imgextract triage`, with its cost in UNet evaluations per caption):
  wen1   Wen et al.'s ‖ε(x_t,c) − ε(x_t,∅)‖ at the first step, 4 seeds (8 evaluations)
  wen5   the same averaged over the first 5 steps of a 25-step schedule (40 evaluations)
  attn1  negative entropy of the cross-attention over text positions, same calls as wen1 (0 extra)
  attn5  the same over 5 steps (0 extra beyond wen5)
  end1   share of cross-attention on the end token and padding (0 extra), end5 over 5 steps
  edge   Webster's one-step edge consistency, 4 seeds (8 evaluations)
  A+B    mean of the two within-model percentile ranks (cost: the calls of both, shared calls once)
A leading "-" is the same score with its sign flipped: the direction is chosen on dev too.

The default is the score with the best pooled AUC on the dev models (the cheapest on a tie);
the held-out table is printed after the choice is made. AUC intervals: 2,000 bootstrap
resamples of captions, stratified by model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from imgextract.app.demo import DEMO_STEPS, cache_root

SCORES = {  # name: (column, sign, the UNet calls it needs: scores of one family share them)
    "wen1": ("wen_score_1", 1, "noise1"), "wen5": ("wen_score_5", 1, "noise5"), "attn1": ("attn_score_1", 1, "noise1"),
    "attn5": ("attn_score_5", 1, "noise5"), "-attn1": ("attn_score_1", -1, "noise1"),
    "-attn5": ("attn_score_5", -1, "noise5"), "end1": ("attn_end_1", 1, "noise1"), "-end1": ("attn_end_1", -1, "noise1"),
    "-end5": ("attn_end_5", -1, "noise5"), "edge": ("edge_score", 1, "edge"),
}
CALLS = {"noise1": 8, "noise5": 40, "edge": 8}  # UNet evaluations per caption at 4 seeds
COMBOS = {"wen1+attn1": ("wen1", "attn1"), "wen1+-end1": ("wen1", "-end1"), "wen5+-end5": ("wen5", "-end5"),
          "wen1+edge": ("wen1", "edge")}


@dataclass
class ModelSpec:
    schedule: str
    seed: int
    faces: bool

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        body, _, seed = text.partition("@")
        faces = body.endswith("+faces")
        return cls(body.removesuffix("+faces"), int(seed or 0), faces)

    @property
    def name(self) -> str:
        v, u = DEMO_STEPS
        extra = "-faces" if self.faces else ""
        return f"toy-{self.schedule.replace(',', '_')}{extra}-32px-{v}+{u}steps-seed{self.seed}"


def faces_folder(root: Path) -> Path:
    """The toy's built-in photographs followed by 200 LFW faces, each with a caption."""
    folder = root / "toy-images-with-faces"
    if (folder / "done").is_file():
        return folder
    import skimage.data
    from PIL import Image

    from imgextract.demo.toy import DEFAULT_IMAGES
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, caption, load) in enumerate(DEFAULT_IMAGES):
        load().save(folder / f"{i:03d}-{name}.png")
        (folder / f"{i:03d}-{name}.txt").write_text(caption)
    for j, face in enumerate(skimage.data.lfw_subset()[:200]):
        stem = f"{len(DEFAULT_IMAGES) + j:03d}-face"
        Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(f"a grey portrait photo of person {j}")
    (folder / "done").write_text("")
    return folder


def sweep(spec: ModelSpec, samples: int) -> tuple[Path, Path]:
    """Train (or reuse) the model, index its training set, sweep and scan it; (model, run)."""
    from imgextract.app.commands import run_generation, run_scan, train_toy
    from imgextract.stages.generate import SamplingConfig
    from imgextract.app.commands import build_index
    from imgextract.demo.toy import ToyConfig
    root = cache_root()
    model = root / spec.name
    if not (model / "toy.json").is_file():
        print(f"training {spec.name}", file=sys.stderr)
        cfg = ToyConfig(duplicates=spec.schedule, seed=spec.seed, vae_steps=DEMO_STEPS[0], unet_steps=DEMO_STEPS[1])
        train_toy(model, cfg, faces_folder(root) if spec.faces else None)
    index = root / "eval-indexes" / spec.name
    if not (index / "embedder.json").is_file():
        build_index(model / "train", str(index), "pixel", overwrite=True, progress=False)
    run = root / "eval-runs" / f"{spec.name}-s{samples}"
    if not (run / "summary.json").is_file():
        cfg = SamplingConfig(samples=samples, batch_size=32, steps=25, guidance=3.0, seed=spec.seed, device="cpu")
        run_generation(model / "train" / "copies.csv", str(model), run, cfg, say=lambda s: print(s, file=sys.stderr))
        run_scan(run, str(index), run, k=5, threshold=0.15, grid=4, say=lambda s: print(s, file=sys.stderr))
    return model, run


def scores_for(spec: ModelSpec, model: Path, run: Path) -> pd.DataFrame:
    """Every score for every caption of one model, with its label (cached beside the run)."""
    cached = run / "triage-eval.parquet"
    if cached.is_file():
        table = pd.read_parquet(cached)
        table["label_any"] = (table["rate"] > 0.5).astype(int)
        table["label"] = own_labels(run, table)
        return table
    from imgextract.models.pipelines import load_pipeline
    from imgextract.stages.triage import TriageParams, triage
    caps = pd.read_parquet(run / "captions.parquet")
    per = pd.DataFrame(json.loads((run / "summary.json").read_text())["per_caption"])[["caption_id", "rate"]]
    table = caps.merge(per, on="caption_id")
    table["label_any"] = (table["rate"] > 0.5).astype(int)
    table["label"] = own_labels(run, table)
    loaded = load_pipeline(str(model), device="cpu")
    for steps in (1, 5):
        res = triage(loaded, table, TriageParams(steps=steps, samples=4, schedule_steps=25, guidance=3.0),
                     ("wen", "attn"))
        res = res[["caption_id", "wen_score", "attn_score", "attn_end"]].add_suffix(f"_{steps}")
        table = table.merge(res.rename(columns={f"caption_id_{steps}": "caption_id"}), on="caption_id")
    edge = triage(loaded, table, TriageParams(steps=1, samples=4, guidance=3.0), ("edge",))
    table = table.merge(edge[["caption_id", "edge_score"]], on="caption_id")
    table["model"] = spec.name
    table.to_parquet(cached)
    return table


def own_labels(run: Path, table: pd.DataFrame) -> pd.Series:
    """1 where most of a caption's samples are memorized against the caption's own training image."""
    m = pd.read_parquet(run / "matches.parquet", columns=["generation_path", "caption_id", "train_path", "memorized"])
    own = m.merge(table[["caption_id", "train_path"]], on="caption_id", suffixes=("", "_own"))
    own["hit"] = own["memorized"] & (own["train_path"] == own["train_path_own"])
    rate = own.groupby(["caption_id", "generation_path"])["hit"].any().groupby("caption_id").mean()
    return (table["caption_id"].map(rate).fillna(0) > 0.5).astype(int)


def ranked(table: pd.DataFrame) -> pd.DataFrame:
    """Each score as its within-model percentile rank (sign applied), plus the combinations."""
    out = table[["model", "caption_id", "label", "label_any"]].copy()
    for name, (col, sign, _) in SCORES.items():
        out[name] = (sign * table[col]).groupby(table["model"]).rank(pct=True)
        out[f"raw:{name}"] = sign * table[col]
    for name, parts in COMBOS.items():
        out[name] = out[list(parts)].mean(axis=1)
    return out


def cost(name: str) -> int:
    """UNet evaluations per caption: each family of calls counted once (wen1 and -end1 share theirs)."""
    parts = COMBOS.get(name, (name,))
    return sum(CALLS[f] for f in {SCORES[p][2] for p in parts})


def auc_ci(table: pd.DataFrame, score: str, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    y, s = table["label"].to_numpy(), table[score].to_numpy()
    auc = roc_auc_score(y, s)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(table["model"].to_numpy() == m) for m in table["model"].unique()]
    boots = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        if 0 < y[idx].sum() < len(idx):
            boots.append(roc_auc_score(y[idx], s[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return auc, lo, hi


def tpr_at(table: pd.DataFrame, score: str, fpr: float = 0.01) -> float:
    f, t, _ = roc_curve(table["label"], table[score])
    return float(t[f <= fpr].max())


def report(title: str, table: pd.DataFrame, names: list[str]) -> dict[str, float]:
    models = list(table["model"].unique())
    with_pos = table[table.groupby("model")["label"].transform("sum") > 0]
    pos, neg = int(with_pos["label"].sum()), int((1 - with_pos["label"]).sum())
    print(f"\n{title}: {len(models)} model(s); pooled over the {with_pos['model'].nunique()} with memorized captions: "
          f"{pos} memorized, {neg} not")
    print(f"{'score':12s} {'UNet/caption':>12s} {'pooled AUC [95% CI]':>24s} {'TPR@1%FPR':>9s} {'raw, all':>8s}  "
          + "  ".join(f"AUC m{i + 1}" for i in range(len(models))))
    aucs = {}
    for name in names:
        auc, lo, hi = auc_ci(with_pos, name)
        per = []
        for m in models:
            sub = table[table["model"] == m]
            per.append(f"{roc_auc_score(sub['label'], sub[name]):6.3f}" if 0 < sub["label"].sum() < len(sub)
                       else "   n/a")
        parts = COMBOS.get(name, (name,))
        raw = f"{roc_auc_score(table['label'], table[f'raw:{name}']):8.3f}" if len(parts) == 1 else "       -"
        print(f"{name:12s} {cost(name):12d} {auc:8.3f} [{lo:.3f}, {hi:.3f}]   {tpr_at(with_pos, name):9.3f} {raw}  "
              + "  ".join(per))
        aucs[name] = auc
    for i, m in enumerate(models):
        sub = table[table["model"] == m]
        print(f"  m{i + 1} = {m}: {int(sub['label'].sum())} of {len(sub)} captions memorized against their own image "
              f"({int(sub['label_any'].sum())} against any training image)")
    return aucs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", nargs="+", default=["100x1,10x4,1x25@0"], help="models the default is chosen on")
    ap.add_argument("--models", nargs="+", required=True, help="held-out models: SCHEDULE@SEED[+faces]")
    ap.add_argument("--samples", type=int, default=8, help="sweep samples per caption (ground truth)")
    args = ap.parse_args()
    dev_specs, held_specs = [ModelSpec.parse(t) for t in args.dev], [ModelSpec.parse(t) for t in args.models]
    if {s.name for s in dev_specs} & {s.name for s in held_specs}:
        raise SystemExit("a held-out model is also a dev model")
    tables = {}
    for spec in dev_specs + held_specs:
        model, run = sweep(spec, args.samples)
        tables[spec.name] = scores_for(spec, model, run)
    names = list(SCORES) + list(COMBOS)
    dev = ranked(pd.concat([tables[s.name] for s in dev_specs], ignore_index=True))
    dev_auc = report("DEV (used to choose the default)", dev, names)
    best = max(names, key=lambda n: (round(dev_auc[n], 3), -cost(n)))
    print(f"\nchosen on dev: {best} (dev pooled AUC {dev_auc[best]:.3f}, {cost(best)} UNet evaluations per caption)")
    held = ranked(pd.concat([tables[s.name] for s in held_specs], ignore_index=True))
    held_auc = report("HELD-OUT (never used for the choice)", held, names)
    held = held[held.groupby("model")["label"].transform("sum") > 0]
    auc, lo, hi = auc_ci(held, best)
    print(f"\ndefault {best}: held-out pooled AUC {auc:.3f} [{lo:.3f}, {hi:.3f}], TPR@1%FPR "
          f"{tpr_at(held, best):.3f}; best held-out score would have been "
          f"{max(held_auc, key=held_auc.get)} ({max(held_auc.values()):.3f})")


if __name__ == "__main__":
    main()
