"""The scan's results assembled: matches from every shard, and the counts the report leads with."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from imgextract import rundir
from imgextract.index.store import TrainingIndex
from imgextract.sources.tables import LICENSE_COLUMNS, SOURCE_COLUMNS, role_column
from imgextract.stages.scan.params import KIND_ORDER, MATCH_COLUMNS, ScanParams
from imgextract.stages.scan.plan import ScanPlan
from imgextract.stats import wilson_ci

def assemble(work: Path, plan: ScanPlan) -> tuple[pd.DataFrame, list[dict]]:
    """All shards' matches and skipped lists; for a folder, each file's rows from the shard that
    scanned it as it is now (a changed file's older rows and a vanished file's rows are dropped)."""
    parts, skipped = [], []
    for name in plan.shards:
        m = pq.read_table(work / f"{name}.parquet").to_pandas()
        sk = rundir.read_json(work / f"{name}.skipped.json")
        if plan.current is not None:
            f = pq.read_table(work / f"{name}.files.parquet").to_pandas()
            valid = {p for p, sz, mt in zip(f["path"], f["size"], f["mtime_ns"]) if plan.current.get(p) == (sz, mt)}
            m = m[m["generation_path"].isin(valid)]
            sk = [x for x in sk if x["path"] in valid]
        parts.append(m)
        skipped += sk
    matches = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MATCH_COLUMNS)
    return matches, skipped + (plan.listed_bad or [])


def summarize(matches: pd.DataFrame, generations_total: int, skipped: list[dict], params: ScanParams,
              index: TrainingIndex) -> dict:
    """Counts per caption and per memorized training image; the numbers the report leads with."""
    mem = matches[matches["memorized"]]
    best = matches.sort_values("tiled_l2").drop_duplicates("generation_path")
    per_image = []
    table = getattr(index, "table", None)  # url and licence of each memorized image, when the index has them
    columns = table.columns if table is not None else []
    url_col, lic_col = role_column(columns, SOURCE_COLUMNS), role_column(columns, LICENSE_COLUMNS)
    for tid, grp in mem.groupby("train_id"):
        row = table.iloc[int(tid)] if table is not None else None
        strongest = grp.loc[(grp["copy_kind"].map(KIND_ORDER).fillna(3) * 10 + grp["copied_share"].fillna(1)).idxmax()] \
            if "copy_kind" in grp else grp.iloc[0]
        members = sorted({int(m) for ms in grp.get("template_members", pd.Series(dtype=object)).dropna() for m in ms})
        per_image.append({"train_id": int(tid), "train_path": grp["train_path"].iat[0],
                          "train_caption": grp["train_caption"].iat[0],
                          "generations": int(grp["generation_path"].nunique()),
                          "kind": str(strongest.get("copy_kind") or "whole"),
                          "best_share": float(grp["copied_share"].max()) if "copied_share" in grp else None,
                          "template_members": members,
                          **({"template_mask": str(strongest["template_mask"])}
                             if isinstance(strongest.get("template_mask"), str) and strongest["template_mask"] else {}),
                          "best_tiled_l2": float(grp["tiled_l2"].min()),
                          **({"url": _text(row[url_col])} if url_col else {}),
                          **({"license": _text(row[lic_col])} if lic_col else {})})
    per_caption = []
    if matches["caption_id"].notna().any():
        for cid, grp in best.groupby("caption_id", sort=True):
            gens = grp["generation_path"].nunique()
            m = mem[mem["caption_id"] == cid]["generation_path"].nunique()
            top = grp.sort_values("tiled_l2").iloc[0]
            per_caption.append({"caption_id": str(cid), "caption": grp["caption"].iat[0], "samples": int(gens),
                                "memorized_samples": int(m), "rate": m / gens if gens else 0.0,
                                "best_tiled_l2": float(top["tiled_l2"]),
                                "best_exact": bool(top["exact"]) if "exact" in grp else True})
    shares = descriptor_shares(matches)
    return {
        "replications": replications(matches),
        **({"sscd": shares} if shares else {}),
        "parameters": {**asdict(params), "index_path": str(index.path), "embedder": index.embedder.get("spec")},
        "generations": int(generations_total),
        "generations_scanned": int(matches["generation_path"].nunique()),
        "skipped": skipped,
        "memorized_generations": int(mem["generation_path"].nunique()),
        "copies": copy_counts(mem),
        "memorized_images": sorted(per_image, key=lambda r: r["best_tiled_l2"]),
        "per_caption": per_caption,
    }


def replications(matches: pd.DataFrame) -> list[dict]:
    """Generations with no near-exact copy whose nearest match is still a replication (replication.replication_level):
    listed, never counted clean. One entry per generation: its strongest level and training image."""
    if "replication" not in matches or not len(matches):
        return []
    order = {"replication": 2, "partial replication": 1}
    copied = set(matches.loc[matches["memorized"].astype(bool), "generation_path"])
    graded = matches[matches["replication"].isin(order) & ~matches["generation_path"].isin(copied)]
    out = []
    for gen, grp in graded.groupby("generation_path", sort=True):
        best = grp.loc[(grp["replication"].map(order) * 10 + grp["replication_score"].fillna(0)).idxmax()]
        out.append({"generation_path": gen, "level": best["replication"], "train_id": int(best["train_id"]),
                    "train_path": best["train_path"], "replication_score": float(best["replication_score"]),
                    **({"sscd_similarity": float(best["sscd_similarity"])} if "sscd_similarity" in grp else {})})
    return out


def descriptor_shares(matches: pd.DataFrame, column: str = "sscd_similarity") -> dict | None:
    """The share of generations whose best candidate is over each of the papers' SSCD thresholds
    (Somepalli et al. and MemBench: 0.5; Wen et al.: 0.7 "memorized"), with Wilson intervals.
    The candidates are the k the index's embedder retrieved, so a pair it did not retrieve is not counted."""
    from imgextract.models.descriptors import SHARES
    if column not in matches.columns or not len(matches):
        return None
    best = matches.groupby("generation_path")[column].max()
    n = int(best.notna().sum())
    out = {"generations": n, "column": column, "candidates": "the k nearest by the index's embedder"}
    for t in SHARES:
        hits = int((best > t).sum())
        lo, hi = wilson_ci(hits, n)
        out[f"over_{t:g}"] = {"generations": hits, "share": hits / n if n else 0.0, "ci_low": lo, "ci_high": hi}
    return out


def strongest_first(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by copy kind (whole, template, portion), then the larger share, then tiled L2."""
    key = rows["copy_kind"].map(KIND_ORDER).fillna(0)
    return rows.assign(_k=-key, _s=-rows["copied_share"].fillna(0)).sort_values(
        ["_k", "_s", "tiled_l2"], kind="stable").drop(columns=["_k", "_s"])


def copy_counts(memorized: pd.DataFrame) -> dict:
    """Memorized generations per copy kind, each counted once at its strongest kind (whole > template > portion)."""
    counts = {k: 0 for k in ("whole", "portion", "template")}
    if "copy_kind" not in memorized or memorized.empty:
        return counts
    strongest = memorized.assign(_o=memorized["copy_kind"].map(KIND_ORDER).fillna(3)).groupby("generation_path")["_o"].max()
    names = {v: k for k, v in KIND_ORDER.items()}
    for o, n in strongest.value_counts().items():
        if names[int(o)] in counts:
            counts[names[int(o)]] = int(n)
    return counts


def family_view(matches: pd.DataFrame, train: pd.DataFrame, captions: pd.DataFrame | None) -> dict | None:
    """Template families of a toy's training set (its captions' ``family``): members, and how many of
    them a generation copied as a template."""
    if captions is None or "family" not in captions or captions["family"].isna().all():
        return None
    members = captions.dropna(subset=["family"])
    ids = train.loc[train["path"].isin(members["train_path"]), "id"].astype(int)
    hit = matches[matches["memorized"] & (matches.get("copy_kind") == "template")]
    copied = sorted(set(ids) & set(hit["train_id"].astype(int)))
    return {"families": int(members["family"].nunique()), "members": int(len(ids)), "members_copied": len(copied)}


def duplication_view(matches: pd.DataFrame, train: pd.DataFrame, captions: pd.DataFrame | None) -> list[dict]:
    """Extraction rate per duplication level, when each training image's copy count is known.

    Copy counts come from the index (a ``copies`` column of its source table) or else from the
    run's captions (``copies`` + ``train_path``, e.g. a toy model's ``copies.csv``). Per level:
    how many training images at least one generation memorized, and (for a run) the share of
    those captions' samples that were memorized. Carlini et al.'s duplication view.
    """
    copies = train["copies"] if "copies" in train.columns else pd.Series(np.nan, index=train.index)
    if captions is not None and "copies" in captions and captions["copies"].notna().any():
        by_path = captions.dropna(subset=["train_path", "copies"]).set_index("train_path")["copies"]
        by_path = by_path[~by_path.index.duplicated()]
        copies = copies.fillna(train["path"].map(by_path))
    if captions is not None and "family" in captions:  # template family members: seen once, but not single-copy
        copies = copies.where(~train["path"].isin(captions.dropna(subset=["family"])["train_path"]))
    if copies.isna().all():
        return []
    train = train.assign(copies=copies)
    memorized_ids = set(matches.loc[matches["memorized"], "train_id"].astype(int))
    sample_rate: dict[int, tuple[int, int]] = {}
    if captions is not None and captions["copies"].notna().any() and len(matches):
        per_gen = matches.groupby("generation_path").agg(caption_id=("caption_id", "first"),
                                                         memorized=("memorized", "any"))
        levels = captions[["caption_id", "copies"]]
        if "family" in captions:   # a family member's captions belong to no duplication level (as its image)
            levels = levels[captions["family"].isna()]
        per_gen = per_gen.merge(levels, on="caption_id", how="inner")
        for level, grp in per_gen.groupby("copies"):
            sample_rate[int(level)] = (int(grp["memorized"].sum()), len(grp))
    rows = []
    for level, grp in train.dropna(subset=["copies"]).groupby("copies"):
        level = int(level)
        hit = sum(int(i) in memorized_ids for i in grp["id"])
        row = {"copies": level, "images": len(grp), "memorized_images": hit, "image_rate": hit / len(grp)}
        if level in sample_rate:
            m, n = sample_rate[level]
            row.update(samples=n, memorized_samples=m, sample_rate=m / n if n else 0.0)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["copies"])


def _text(v) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
