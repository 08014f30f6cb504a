"""The papers' table for one audited run (``imgextract report RUN --paper``).

What the memorization literature reports for a model, computed from the run's own evidence:

* the share of captions with at least one memorized sample (Carlini et al.'s extraction rate), in
  all and by copy kind (whole, portion, template: a caption counts under each kind it drew), with a
  95% bootstrap interval over captions;
* with labels (a ``memorized`` column in the caption table, e.g. a labelled Webster/MemBench set):
  the same share among the labelled-memorized prompts (recall) and among the clean ones (false
  flags), each with its Wilson interval; with a published label file (Webster's ground truth, Jeon's,
  NeMo's), the same rate per published kind (whole, retrieved, template, none) and the kinds drawn;
* the share of generations over SSCD similarity 0.5 and 0.7 (Somepalli/DCR, MemBench; Wen et al.'s
  "memorized") with Wilson intervals, when the scan had an SSCD descriptor (``--descriptor``); else
  it says it was not measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.stats import bootstrap_ci, wilson_ci

KINDS = ("whole", "portion", "template")
PUBLISHED_KINDS = ("whole", "retrieved", "template", "none")   # sources.tables.KINDS: what a published label says
PAPER = "paper.json"


def _share(hits: np.ndarray) -> dict:
    lo, hi = bootstrap_ci(hits, 2000, 0) if len(hits) > 1 else (float("nan"), float("nan"))
    return {"captions": int(len(hits)), "with_copy": int(hits.sum()), "share": float(hits.mean()) if len(hits) else 0.0,
            "ci_low": lo, "ci_high": hi}


def _rate(hits: np.ndarray) -> dict:
    lo, hi = wilson_ci(int(hits.sum()), len(hits))
    return {"prompts": int(len(hits)), "with_copy": int(hits.sum()), "rate": float(hits.mean()) if len(hits) else 0.0,
            "ci_low": lo, "ci_high": hi}


def paper_figures(run: Path) -> dict:
    """The block: computed from matches.parquet, summary.json and (for labels) captions.parquet."""
    run = Path(run)
    if not (run / rundir.MATCHES).is_file() or not (run / rundir.SUMMARY).is_file():
        raise InputError(f"{run} has no {rundir.MATCHES}/{rundir.SUMMARY}", f"run `imgextract scan` with --out {run} first")
    summary = rundir.read_json(run / rundir.SUMMARY)
    per = pd.DataFrame(summary.get("per_caption") or [])
    if per.empty:
        raise InputError(f"{run} has no per-caption results (a plain folder was scanned)",
                         "the papers' table needs a run: generate from captions, then scan")
    m = pd.read_parquet(run / rundir.MATCHES, columns=["caption_id", "memorized", "copy_kind"])
    mem = m[m["memorized"]]
    ids = per["caption_id"].astype(str)
    kinds_of = mem.groupby(mem["caption_id"].astype(str))["copy_kind"].agg(set)
    any_hit = ids.isin(kinds_of.index).to_numpy()
    block = {"run": str(run.resolve()), "captions": int(len(ids)), "extraction": _share(any_hit.astype(float)),
             "by_kind": {k: _share(np.array([k in kinds_of.get(c, set()) for c in ids], float)) for k in KINDS},
             "sscd": summary.get("sscd") or "not measured: the scan had no SSCD descriptor (--descriptor sscd:PATH)",
             "labelled": None}
    captions = run / rundir.CAPTIONS
    if captions.is_file():
        table = pd.read_parquet(captions)
        if "memorized" in table.columns:
            label = dict(zip(table["caption_id"].astype(str), table["memorized"].astype(bool)))
            is_pos = ids.map(label).astype(bool).to_numpy()
            pos, neg = any_hit[is_pos], any_hit[~is_pos]
            block["labelled"] = {"memorized_prompts": _rate(pos.astype(float)), "clean_prompts": _rate(neg.astype(float))}
        if "published_kind" in table.columns:   # a published label file: the extraction rate beside each label
            published = ids.map(dict(zip(table["caption_id"].astype(str), table["published_kind"]))).to_numpy()
            block["by_published_kind"] = {
                k: {**_rate(any_hit[published == k].astype(float)),
                    "drew": {d: int(sum(d in kinds_of.get(c, set()) for c in ids[published == k])) for d in KINDS}}
                for k in PUBLISHED_KINDS if (published == k).any()}
    return block


def _ci(r: dict, key: str) -> str:
    if r.get("ci_low") is None or np.isnan(r["ci_low"]):
        return f"{r[key]:.3f} (one caption: no interval)"
    return f"{r[key]:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def paper_text(block: dict) -> str:
    """The block as the table a paper prints."""
    e = block["extraction"]
    lines = ["| figure | value [95% CI] | count |", "|---|---|---|",
             f"| captions with a memorized sample (any kind) | {_ci(e, 'share')} | {e['with_copy']}/{e['captions']} |"]
    for k in KINDS:
        r = block["by_kind"][k]
        lines.append(f"| ... a {k} copy | {_ci(r, 'share')} | {r['with_copy']}/{r['captions']} |")
    if block["labelled"]:
        for name, key in (("labelled memorized prompts with a copy (recall)", "memorized_prompts"),
                          ("clean prompts with a copy (false flags)", "clean_prompts")):
            r = block["labelled"][key]
            lines.append(f"| {name} | {_ci(r, 'rate')} | {r['with_copy']}/{r['prompts']} |")
    for k, r in (block.get("by_published_kind") or {}).items():
        drew = ", ".join(f"{n} {d}" for d, n in r["drew"].items() if n) or "no copy"
        lines.append(f"| published '{k}' prompts with a copy (drew: {drew}) | {_ci(r, 'rate')} | "
                     f"{r['with_copy']}/{r['prompts']} |")
    sscd = block["sscd"]
    if isinstance(sscd, dict):
        for t in ("0.5", "0.7"):
            r = sscd[f"over_{t}"]
            lines.append(f"| generations over SSCD {t} | {_ci({**r, 'rate': r['share']}, 'rate')} | "
                         f"{r['generations']}/{sscd['generations']} |")
    else:
        lines.append(f"| generations over SSCD 0.5 / 0.7 | {sscd} | - |")
    return "\n".join(lines)


def write_paper(run: Path) -> tuple[dict, Path]:
    """paper.json beside the run's summary (the run is imgextract's own folder)."""
    block = paper_figures(run)
    path = Path(run) / PAPER
    rundir.write_json_atomic(path, block)
    return block, path
