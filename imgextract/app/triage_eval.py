"""Detection of memorized prompts, scored the way the papers score it.

Wen et al. (ICLR'24) and the work after them report, for a detector, the ROC AUC and the TPR at 1%
and 3% FPR over a labelled prompt set: Webster's 500 memorized SD 1.x prompts against
non-memorized ones. :func:`run_triage_eval` does that for every triage score of one model, each
figure with a bootstrap interval (positives and negatives resampled separately) and the UNet
evaluations it cost per prompt, and prints the papers' table with the literature's figures beside.

:func:`evaluate_toys` is the held-out evaluation on toy models with known duplication
(``scripts/eval_triage.py`` calls it): the default score is chosen on dev models, then measured on
models it never saw.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.stats import bootstrap_metric, roc_auc, tpr_at_fpr
from imgextract.copies import CopyRule

# What the literature reports for SD 1.4/1.5 (shared/notes/literature.md): (detector, AUC, TPR@1%FPR, setting)
LITERATURE = [
    ("Wen et al. (ICLR'24), first step, 1 image", "0.960", "0.76", "SD 1.4, Webster's 500 vs ~2,000 clean"),
    ("Wen et al., 4 images x 50 steps", "0.994", "0.982", "SD 1.4"),
    ("Ren et al. (ECCV'24), cross-attention entropy", "0.966", "-", "SD 1.4"),
    ("Jeon et al. (ICML'25), sharpness", "0.998", "-", "SD 1.4"),
    ("Asthana & Belagiannis (ICLR'26), guidance on pure noise", "0.992-0.999", "0.93-0.98", "SD 1.4/1.5"),
    ("ICML'26 Hessian difference, 1 image, 1 step", "0.976", "0.83", "SD 1.5"),
]

# A score: (column of the triage table, sign, the family of UNet calls it needs). Scores of one family
# share their calls: asking for several costs the family once.
SCORES = {"edge": ("edge_score", 1, "edge"), "wen": ("wen_score", 1, "noise"), "attn": ("attn_score", 1, "noise"),
          "-end": ("attn_end", -1, "noise"), "guide": ("guide_score", 1, "noise"),
          "agree": ("guide_agreement", 1, "noise"), "mid": ("mid_score", 1, "noise")}
COMBOS = {"guide+edge": ("guide", "edge"), "wen+edge": ("wen", "edge"), "guide+wen": ("guide", "wen")}
FAMILY_EVALS = {"noise": "wen_unet_evals", "edge": "edge_unet_evals"}


# -- a labelled prompt set ---------------------------------------------------------------------------------------

def labelled_prompts(memorized: Path | None = None, clean: Path | None = None,
                     labelled: Path | None = None) -> pd.DataFrame:
    """caption_id, caption, label: one positives file and one negatives file (any caption source: Webster's
    jsonl, MemBench's CSV, text, tables), or one table with a ``memorized`` column."""
    from imgextract.sources.tables import read_captions
    if labelled is not None and (memorized is not None or clean is not None):
        raise InputError("--labelled was given with --memorized/--clean", "give one labelled table, or the two files")
    if labelled is not None:
        table = read_captions(Path(labelled)).to_pandas()
        if "memorized" not in table.columns:
            raise InputError(f"{labelled} has no 'memorized' column",
                             "add a memorized column (1/0), or give --memorized FILE --clean FILE")
        out = table[["caption_id", "caption"]].assign(label=table["memorized"].astype(int))
    elif memorized is not None and clean is not None:
        pos = read_captions(Path(memorized)).to_pandas()
        neg = read_captions(Path(clean)).to_pandas()
        out = pd.concat([pos[["caption_id", "caption"]].assign(caption_id="m" + pos["caption_id"], label=1),
                         neg[["caption_id", "caption"]].assign(caption_id="c" + neg["caption_id"], label=0)],
                        ignore_index=True)
    else:
        raise InputError("no labelled prompts", "give --memorized FILE and --clean FILE, or --labelled TABLE")
    n_pos, n_neg = int(out["label"].sum()), int((out["label"] == 0).sum())
    if not n_pos or not n_neg:
        raise InputError(f"the labelled prompts hold {n_pos} memorized and {n_neg} clean prompts",
                         "an evaluation needs both")
    return out


# -- figures -----------------------------------------------------------------------------------------------------

def with_combinations(table: pd.DataFrame) -> pd.DataFrame:
    """Each score signed, plus the combinations: the mean of their percentile ranks within the set (uses
    only the scores' order, never a label)."""
    out = table.copy()
    for name, (col, sign, _) in SCORES.items():
        if col in out and out[col].notna().all():
            out[name] = sign * out[col].astype(float)
    for name, parts in COMBOS.items():
        if all(p in out for p in parts):
            out[name] = np.mean([out[p].rank(pct=True) for p in parts], axis=0)
    return out


def unet_evals(table: pd.DataFrame, name: str) -> float:
    """UNet evaluations per prompt of a score: each family of calls counted once."""
    families = {SCORES[p][2] for p in COMBOS.get(name, (name,))}
    return float(sum(table[FAMILY_EVALS[f]].mean() for f in families if FAMILY_EVALS[f] in table))


def figures(labels, scores, n_boot: int = 2000, seed: int = 0) -> dict:
    """AUC, TPR@1%FPR and TPR@3%FPR, each with its 95% bootstrap interval."""
    out = {}
    for key, metric in (("auc", roc_auc), ("tpr_at_1pct_fpr", lambda y, s: tpr_at_fpr(y, s, 0.01)),
                        ("tpr_at_3pct_fpr", lambda y, s: tpr_at_fpr(y, s, 0.03))):
        lo, hi = bootstrap_metric(labels, scores, metric, n_boot, seed)
        out[key] = {"value": metric(labels, scores), "ci_low": lo, "ci_high": hi}
    return out


def evaluate(table: pd.DataFrame, n_boot: int = 2000) -> list[dict]:
    """One row per score the table holds: its figures and cost."""
    t = with_combinations(table)
    rows = []
    for name in [*SCORES, *COMBOS]:
        if name in t:
            rows.append({"score": name, "unet_evals_per_prompt": unet_evals(t, name),
                         **figures(t["label"].to_numpy(), t[name].to_numpy(), n_boot)})
    return rows


def _f(fig: dict) -> str:
    return f"{fig['value']:.3f} [{fig['ci_low']:.3f}, {fig['ci_high']:.3f}]"


def paper_table(rows: list[dict], model: str, positives: int, negatives: int) -> str:
    """The papers' table: this model's scores, then the literature's reported figures (another setting)."""
    lines = ["| detector | AUC [95% CI] | TPR@1%FPR [95% CI] | TPR@3%FPR [95% CI] | UNet evals/prompt | setting |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| imgextract {r['score']} | {_f(r['auc'])} | {_f(r['tpr_at_1pct_fpr'])} | "
                     f"{_f(r['tpr_at_3pct_fpr'])} | {r['unet_evals_per_prompt']:g} | {Path(model).name}: {positives} memorized, "
                     f"{negatives} clean |")
    for name, auc, tpr, setting in LITERATURE:
        lines.append(f"| {name} (reported) | {auc} | {tpr} | - | - | {setting} |")
    return "\n".join(lines)


def run_triage_eval(model: str, out: Path, params, memorized: Path | None = None, clean: Path | None = None,
                    labelled: Path | None = None, methods: tuple[str, ...] = ("wen", "attn", "guide", "edge"),
                    device: str = "auto", dtype: str = "auto", model_config: str | None = None,
                    n_boot: int = 2000, say: Callable[[str], None] = print) -> dict:
    """Score every labelled prompt with triage, then every score's figures; eval.json is written last."""
    from imgextract.app.commands import require_family
    from imgextract.models.families import require
    from imgextract.models.pipelines import load_pipeline, quiet_libraries, set_scheduler
    from imgextract.progress import show
    from imgextract.stages.triage import METHODS, score_captions
    if not methods or set(methods) - set(METHODS):
        raise InputError(f"--methods '{','.join(methods)}'", f"use a comma list of {', '.join(METHODS)}")
    if n_boot < 100:
        raise InputError(f"--bootstrap {n_boot}", "use at least 100 resamples (2000 is the default)")
    out = Path(out)
    _check_out(out)
    prompts = labelled_prompts(memorized, clean, labelled)
    noise = [m for m in methods if m != "edge"]   # the noise-difference scores read the denoiser itself
    what, remedy = f"triage-eval --methods {','.join(noise)}", "use --methods edge for this model"
    if noise:
        require_family(model, what, remedy)
    quiet_libraries()
    loaded = load_pipeline(model, device, dtype, model_config)
    if noise:
        require(loaded.family, what, model, remedy)
    set_scheduler(loaded.pipe, params.scheduler, loaded.family)
    scored = show(score_captions(loaded, prompts, params, methods), say)
    table = scored.merge(prompts[["caption_id", "label"]], on="caption_id")
    rows = evaluate(table, n_boot)
    pos, neg = int(table["label"].sum()), int((table["label"] == 0).sum())
    result = {"model": model, "family": loaded.family.name, "prompts": {"memorized": pos, "clean": neg,
                                          "sources": {"memorized": str(memorized) if memorized else None,
                                                      "clean": str(clean) if clean else None,
                                                      "labelled": str(labelled) if labelled else None}},
              "triage": params.__dict__, "methods": list(methods), "bootstrap": n_boot, "scores": rows,
              "per_prompt": table.drop(columns=[c for c in table.columns if c.startswith("param_")]).to_dict("records"),
              "table": paper_table(rows, model, pos, neg)}
    rundir.write_json_atomic(out, result)
    return result


def _check_out(out: Path) -> None:
    """eval.json is written new, or over an earlier triage-eval's own file, never over anything else."""
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {out} is not a .json file", "name the evaluation's file, e.g. eval.json")
    if out.exists() or out.is_symlink():
        try:
            ours = out.is_file() and not out.is_symlink() and {"scores", "triage", "prompts"} <= set(
                json.loads(out.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise InputError(f"--out {out} exists and is not a triage evaluation; refusing to replace it",
                             "choose a new file name")


# -- the held-out evaluation on toy models ------------------------------------------------------------------------

@dataclass
class ToySpec:
    """``SCHEDULE@SEED`` (``+faces``: the 200 LFW faces as extra single-copy images)."""

    schedule: str
    seed: int
    faces: bool

    @classmethod
    def parse(cls, text: str) -> "ToySpec":
        body, _, seed = text.partition("@")
        faces = body.endswith("+faces")
        return cls(body.removesuffix("+faces"), int(seed or 0), faces)

    @property
    def name(self) -> str:
        from imgextract.app.demo import DEMO_STEPS
        v, u = DEMO_STEPS
        return f"toy-{self.schedule.replace(',', '_')}{'-faces' if self.faces else ''}-32px-{v}+{u}steps-seed{self.seed}"


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
        cfg = ToyConfig(duplicates=spec.schedule, seed=spec.seed, vae_steps=DEMO_STEPS[0], unet_steps=DEMO_STEPS[1])
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
                  say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Choose the default on the dev models (best pooled AUC, the cheaper on a tie; within ``max_evals`` UNet
    evaluations per caption when given), then measure every score on the held-out models."""
    dev_specs, held_specs = [ToySpec.parse(t) for t in dev], [ToySpec.parse(t) for t in held]
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
    return {"dev": dev, "held_out": held, "chosen": best, "dev_figures": dev_fig, "held_out_figures": held_fig}
