"""Published labels re-verified on a model: what each labelled prompt's samples copy, and a cleaned label.

The published memorized-prompt labels are noisy (prompts that no longer reproduce, originals that can
no longer be downloaded). Here every labelled prompt's samples, drawn and scanned (``app.labels``), are
read back per prompt: the seeds whose sample copies a training image, the strongest kind, the share of
samples, the training image and the best similarity. The cleaned label is what the model does:

* a sample copies a training image (whole, portion or template) → memorized, with that kind;
* no sample copies, and the index holds the prompt's original(s) → clean;
* no sample copies, and the index lacks every original the labels name (or holds it without pixels: a
  URL whose fetch failed) → **unreachable**: never counted as clean, since the copy could not have been
  seen. A prompt whose labels name no original is judged on what the index holds.

The confusion table sets the published label (Webster's MV/RV/TV/N, Jeon's, NeMo's, or a yes/no column)
against the verified kind, with a column for the unreachable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imgextract.sources.tables import SOURCE_COLUMNS, role_column
from imgextract.stages.scan.params import KIND_ORDER

VERIFIED = ("whole", "portion", "template", "none", "unreachable")   # the confusion table's columns
TABLE = "verified.parquet"
SUMMARY = "verify.json"


def published_labels(captions: pd.DataFrame) -> pd.Series:
    """The label as published per prompt: the file's own word (MV, TV, VM, ...), else yes/no as MEM/CLEAN."""
    if "published_label" in captions:
        return captions["published_label"].astype(str)
    return captions["memorized"].map({True: "MEM", False: "CLEAN"})


def originals(captions: pd.DataFrame, table: pd.DataFrame) -> list[dict]:
    """Per prompt, its training image(s) as the labels name them (own URL, retrieved/template URLs, a path)
    and the index rows that hold them: ``{"named": [...], "rows": [...]}``."""
    url_col = role_column(table.columns, SOURCE_COLUMNS)
    by_url: dict[str, int] = {}
    if url_col:
        for i, u in enumerate(table[url_col].tolist()):
            if isinstance(u, str) and u:
                by_url.setdefault(u, i)
    by_path = {str(Path(p).resolve()): i for i, p in enumerate(table["path"].tolist()) if isinstance(p, str) and p}
    out = []
    for row in captions.itertuples(index=False):
        named = [u for col in ("train_urls", "retrieved_urls") for u in _listed(getattr(row, col, None))]
        path = getattr(row, "train_path", None)
        if isinstance(path, str) and path:
            named.append(path)
        rows = sorted({by_url[n] for n in named if n in by_url} | {by_path[n] for n in named if n in by_path})
        out.append({"named": named, "rows": rows})
    return out


def _listed(value) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in list(value) if v]


def verify_table(captions: pd.DataFrame, manifests: pd.DataFrame, matches: pd.DataFrame,
                 table: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled prompt: its published label and kind, what its samples copy, the cleaned label.

    ``manifests``: every drawn sample (caption_id, seed); ``matches``: the scan's rows (one per sample and
    candidate); ``table``: the index's rows (to tell whether a prompt's original is held)."""
    held = originals(captions, table)
    similarity = "sscd_similarity" if "sscd_similarity" in matches else "similarity"
    by_caption = dict(tuple(matches.groupby("caption_id", sort=False)))       # one pass, not one per prompt
    drawn_by = dict(tuple(manifests.groupby("caption_id", sort=False)))
    empty = matches.iloc[:0]
    rows = []
    for (cid, caption, published), held_by, label in zip(
            captions[["caption_id", "caption", "memorized"]].itertuples(index=False), held, published_labels(captions)):
        drawn = drawn_by.get(cid, manifests.iloc[:0])
        theirs = by_caption.get(cid, empty)
        mine = theirs[theirs["copy_kind"] != "none"]
        seeds = [int(s) for s in drawn.sort_values("sample_index")["seed"]]       # as drawn: the published first
        copying = [s for s in seeds if s in set(mine["seed"].astype(int))]
        best = mine.loc[(mine["copy_kind"].map(KIND_ORDER) * 10 + mine["copied_share"]).idxmax()] if len(mine) else None
        # an original the index holds but whose pixels could not be fetched (a dead URL) is not reachable either
        dead = set(theirs.loc[theirs["pixels"] == "unavailable", "train_id"])
        reachable = bool(set(held_by["rows"]) - dead) if held_by["named"] else None   # None: the labels name none
        kind = str(best["copy_kind"]) if best is not None else "unreachable" if reachable is False else "none"
        scored = theirs[similarity]
        rows.append({
            "caption_id": cid, "caption": caption, "published_label": label,
            "published_kind": captions.loc[captions["caption_id"] == cid, "published_kind"].iat[0]
            if "published_kind" in captions else ("whole" if published else "none"),
            "published_memorized": bool(published), "originals": held_by["named"], "original_rows": held_by["rows"],
            "reachable": reachable, "samples": len(seeds), "seeds": seeds, "copying_seeds": copying,
            "copy_share": len(copying) / len(seeds) if seeds else 0.0, "verified_kind": kind,
            "train_id": int(best["train_id"]) if best is not None else -1,
            "train_path": str(best["train_path"]) if best is not None else "",
            "own_original": bool(best is not None and int(best["train_id"]) in held_by["rows"]),
            "copied_share": float(best["copied_share"]) if best is not None else 0.0,
            "best_similarity": float(scored.max()) if len(scored) and scored.notna().any() else float("nan"),
            "similarity_kind": similarity.removesuffix("_similarity") or "embedding",
            # the cleaned label: None where the copy could not have been seen (never "clean")
            "memorized": None if kind == "unreachable" else kind != "none"})
    return pd.DataFrame(rows)


def confusion(verified: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Published label × verified kind (whole, portion, template, none, unreachable): prompt counts."""
    out = {}
    for label in sorted(set(verified["published_label"]), key=_label_order):
        rows = verified[verified["published_label"] == label]
        out[label] = {k: int((rows["verified_kind"] == k).sum()) for k in VERIFIED}
    return out


def _label_order(label: str) -> tuple:
    order = ["MV", "VM", "RV", "TV", "TM", "MEM", "N", "CLEAN"]
    return (order.index(label) if label in order else len(order), label)


def agreement(verified: pd.DataFrame) -> dict:
    """How often the published label holds on this model, over the prompts whose originals are held."""
    seen = verified[verified["verified_kind"] != "unreachable"]
    same = seen["published_memorized"] == seen["memorized"].astype(bool)
    return {"prompts": int(len(verified)), "verifiable": int(len(seen)), "agree": int(same.sum()),
            "share": float(same.mean()) if len(seen) else float("nan"),
            "published_memorized_verified_none": int((seen["published_memorized"] & ~seen["memorized"].astype(bool)).sum()),
            "published_clean_verified_copy": int((~seen["published_memorized"] & seen["memorized"].astype(bool)).sum()),
            "unreachable": verified.loc[verified["verified_kind"] == "unreachable", "caption_id"].astype(str).tolist()}


def confusion_text(table: dict[str, dict[str, int]]) -> str:
    """The confusion table as the command prints it."""
    head = f"{'published':>10} | " + " | ".join(f"{k:>11}" for k in VERIFIED)
    lines = [head, "-" * len(head)]
    for label, counts in table.items():
        lines.append(f"{label:>10} | " + " | ".join(f"{counts[k]:>11}" for k in VERIFIED))
    return "\n".join(lines)
