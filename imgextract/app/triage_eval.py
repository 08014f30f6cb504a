"""Detection of memorized prompts, scored the way the papers score it.

Wen et al. (ICLR'24) and the work after them report, for a detector, the ROC AUC and the TPR at 1%
and 3% FPR over a labelled prompt set: Webster's 500 memorized SD 1.x prompts against
non-memorized ones. :func:`run_triage_eval` does that for every triage score of one model, each
figure with a bootstrap interval (positives and negatives resampled separately) and the UNet
evaluations it cost per prompt, and prints the papers' table with the literature's figures beside.

The held-out evaluation on toy models with known duplication, where the default score was chosen, is an
experiment, not a command: ``scripts/eval_triage.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.tables import KINDS
from imgextract.stats import bootstrap_metric, roc_auc, tpr_at_fpr

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

VERIFIED_COLUMNS = ("caption_id", "caption", "memorized", "published_memorized", "verified_kind")


def verified_prompts(path: Path) -> pd.DataFrame:
    """A `labels verify` table: the cleaned label (``label``; -1 where the original was unreachable), the
    published one (``published``) and the verified kind (``kind``)."""
    from imgextract.sources.tables import read_table
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--labels {path} does not exist", "give the verified.parquet that `labels verify` wrote")
    t = read_table(path).to_pandas()
    missing = [c for c in VERIFIED_COLUMNS if c not in t.columns]
    if missing:
        raise InputError(f"--labels {path} is not a `labels verify` table (no {', '.join(missing)})",
                         "give OUT/verified.parquet of `imgextract labels verify`, or use --labelled for a label file")
    cleaned = [(-1 if m is None or m != m else int(bool(m))) for m in t["memorized"]]
    return pd.DataFrame({"caption_id": t["caption_id"].astype(str), "caption": t["caption"].astype(str),
                         "label": cleaned, "published": t["published_memorized"].astype(bool).astype(int),
                         "kind": t["verified_kind"].astype(str)})


def labelled_prompts(memorized: Path | None = None, clean: Path | None = None,
                     labelled: Path | None = None, labels: Path | None = None) -> pd.DataFrame:
    """caption_id, caption, label: one positives file and one negatives file (any caption source: Webster's
    jsonl, MemBench's CSV, text, tables), one table with a ``memorized`` column, or a `labels verify` table
    (the cleaned labels, with the published ones beside: ``published``)."""
    from imgextract.sources.tables import read_captions
    if sum(x is not None for x in (labelled, labels)) + (memorized is not None or clean is not None) > 1:
        raise InputError("--labelled, --labels and --memorized/--clean were combined",
                         "give one: a labelled table, a `labels verify` table, or the two files")
    if labels is not None:
        out = verified_prompts(labels)
    elif labelled is not None:
        table = read_captions(Path(labelled)).to_pandas()
        if "memorized" not in table.columns:
            raise InputError(f"{labelled} has no 'memorized' column",
                             "add a memorized column (1/0), or give --memorized FILE --clean FILE")
        out = table[["caption_id", "caption"]].assign(label=table["memorized"].astype(int))
        if "published_kind" in table.columns:   # a published label file: what each memorized prompt copies
            out["kind"] = table["published_kind"]
    elif memorized is not None and clean is not None:
        pos = read_captions(Path(memorized)).to_pandas()
        neg = read_captions(Path(clean)).to_pandas()
        out = pd.concat([pos[["caption_id", "caption"]].assign(caption_id="m" + pos["caption_id"], label=1),
                         neg[["caption_id", "caption"]].assign(caption_id="c" + neg["caption_id"], label=0)],
                        ignore_index=True)
    else:
        raise InputError("no labelled prompts", "give --memorized FILE and --clean FILE, or --labelled TABLE")
    n_pos, n_neg = int((out["label"] == 1).sum()), int((out["label"] == 0).sum())
    if not n_pos or not n_neg:
        raise InputError(f"the {'verified' if labels is not None else 'labelled'} prompts hold {n_pos} memorized and "
                         f"{n_neg} clean prompts", "an evaluation needs both")
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


def by_kind(table: pd.DataFrame, n_boot: int = 2000) -> dict:
    """Every figure per published kind: that kind's memorized prompts against every clean prompt."""
    if "kind" not in table.columns:
        return {}
    clean = table[table["label"] == 0]
    out = {}
    for kind in [k for k in (*KINDS, "portion") if k != "none"]:   # published kinds, and the verified portion
        pos = table[(table["label"] == 1) & (table["kind"] == kind)]
        if len(pos):
            out[kind] = {"memorized": len(pos), "clean": len(clean),
                         "scores": evaluate(pd.concat([pos, clean], ignore_index=True), n_boot)}
    return out


def kind_table(kinds: dict) -> str:
    """AUC and TPR@1%FPR per score and published kind."""
    if not kinds:
        return ""
    names = [r["score"] for r in next(iter(kinds.values()))["scores"]]
    lines = ["", "per published kind (its memorized prompts against every clean prompt):",
             "| detector | " + " | ".join(f"{k} ({v['memorized']}): AUC, TPR@1%FPR" for k, v in kinds.items()) + " |",
             "|---|" + "---|" * len(kinds)]
    for name in names:
        cells = []
        for v in kinds.values():
            r = next(r for r in v["scores"] if r["score"] == name)
            cells.append(f"{_f(r['auc'])}, {r['tpr_at_1pct_fpr']['value']:.2f}")
        lines.append(f"| imgextract {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
                    n_boot: int = 2000, say: Callable[[str], None] = print, labels: Path | None = None) -> dict:
    """Score every labelled prompt with triage, then every score's figures; eval.json is written last.

    ``labels``: a `labels verify` table: the figures on its cleaned labels (unreachable prompts left out), and
    beside them on the published labels of every prompt (``published`` in eval.json)."""
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
    prompts = labelled_prompts(memorized, clean, labelled, labels)
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
    every = scored.merge(prompts.drop(columns=["caption"]), on="caption_id")
    table = every[every["label"] >= 0].drop(columns=["published"], errors="ignore")   # cleaned: reachable only
    rows = evaluate(table, n_boot)
    kinds = by_kind(table, n_boot)
    pos, neg = int(table["label"].sum()), int((table["label"] == 0).sum())
    result = {"model": model, "family": loaded.family.name, "prompts": {"memorized": pos, "clean": neg,
                                          "sources": {"memorized": str(memorized) if memorized else None,
                                                      "clean": str(clean) if clean else None,
                                                      "labelled": str(labelled) if labelled else None}},
              "triage": params.__dict__, "methods": list(methods), "bootstrap": n_boot, "scores": rows,
              "per_prompt": every.drop(columns=[c for c in every.columns if c.startswith("param_")]).to_dict("records"),
              "by_kind": kinds, "table": paper_table(rows, model, pos, neg) + kind_table(kinds)}
    if kinds:
        result["prompts"]["kinds"] = {k: v["memorized"] for k, v in kinds.items()}
    if labels is not None:   # the same scores judged by the published labels, every prompt
        published = every.drop(columns=["label", "kind"]).rename(columns={"published": "label"})
        p_pos, p_neg = int(published["label"].sum()), int((published["label"] == 0).sum())
        result["prompts"]["sources"]["labels"] = str(labels)
        result["prompts"]["unreachable"] = int((every["label"] < 0).sum())
        result["published"] = {"memorized": p_pos, "clean": p_neg,
                               "scores": evaluate(published, n_boot) if p_pos and p_neg else [],
                               "note": "" if p_pos and p_neg else "the published labels hold one class only"}
        result["table"] = ("on the verified labels (unreachable originals left out):\n" + result["table"] +
                           f"\n\non the published labels ({p_pos} memorized, {p_neg} clean, every prompt):\n" +
                           (paper_table(result["published"]["scores"], model, p_pos, p_neg)
                            if p_pos and p_neg else result["published"]["note"]))
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
