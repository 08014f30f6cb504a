"""Near-duplicates inside a training set: which pictures it holds many copies of.

Carlini et al. audited the most duplicated captions first: duplication is what makes a model
memorize; Webster found most of SD 1.x's memorized prompts are *templates*, layouts that many
training images share. Candidates come from the index itself (k nearest neighbours of every row,
in chunks), then each candidate pair is judged on pixels with the scan's own copy verdict
(``copies.judge``, at the smaller image's size): re-encodes, resizes and small crops of one
picture are whole copies and join one group; images that share a substantial detailed region
join one template family; two photographs of one scene are neither. A pair without readable
pixels is kept on similarity alone and counted as such.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Generator

import numpy as np
import pandas as pd

from imgextract import distance
from imgextract.copies import CopyRule, judge
from imgextract.errors import InputError
from imgextract.index.store import TrainingIndex
from imgextract.progress import Step
from imgextract.sources.images import BadImage, open_rgb
from imgextract.sources.tables import SOURCE_COLUMNS, role_column
from imgextract.index.settings import DuplicateParams

DUPLICATES_JSON = "duplicates.json"
MAX_SIDE = 128  # pixel confirmation size cap: copies are near-identical at any size


def find_duplicates(index: TrainingIndex, params: DuplicateParams = DuplicateParams()
                    ) -> Generator[Step, None, tuple[pd.DataFrame, dict]]:
    """Yields progress; returns (one row per index row: id, cluster, copies, representative, family,
    family_size; counts of what was decided how).

    Two groupings from one judgement (``copies.judge``, the scan's): a pair that is a whole copy
    (re-encoded, resized, cropped by up to ~10%) joins one ``cluster``; a pair that shares a
    substantial detailed region without being a whole copy joins one template ``family`` (Webster's
    template verbatim: a layout many training images share)."""
    n = index.faiss_index.ntotal
    copies_of, families = _UnionFind(n), _UnionFind(n)
    paths = index.table["path"].tolist()
    cache: dict = {}
    rule = CopyRule(threshold=params.threshold)

    def pixels(i: int):
        if i not in cache:
            try:
                cache[i] = open_rgb(Path(paths[i]))
            except BadImage:
                cache[i] = None
            if len(cache) > 4096:
                cache.pop(next(iter(cache)))
        return cache[i]

    counts = Counter()
    k = min(params.k + 1, n)
    looked = min(params.similarity, params.family_similarity)
    for start in range(0, n, params.chunk):
        stop = min(start + params.chunk, n)
        vectors = index.vector_rows(start, stop)
        sims, ids = index.search(vectors, k)
        for row, (srow, irow) in enumerate(zip(sims, ids)):
            i = start + row
            for s, j in zip(srow, irow):
                j = int(j)
                if j <= i or s < looked or copies_of.same(i, j):
                    continue
                a, b = pixels(i), pixels(j)
                if a is None or b is None:
                    if s >= params.similarity:
                        counts["pairs kept on similarity alone (pixels unavailable)"] += 1
                        copies_of.join(i, j)
                    continue
                kind = pair_kind(a, b, rule)
                if kind == "whole":
                    counts["pairs confirmed on pixels"] += 1
                    copies_of.join(i, j)
                elif kind == "portion":
                    counts["pairs sharing a substantial region (template family)"] += 1
                    families.join(i, j)
                else:
                    counts["pairs similar but not copies on pixels"] += 1
        yield Step("duplicates", stop, n, "img")
    cluster = copies_of.groups()
    sizes = pd.Series(cluster).map(pd.Series(cluster).value_counts()).to_numpy()
    family = families.groups()
    family_size = pd.Series(family).map(pd.Series(family).value_counts()).to_numpy()
    table = pd.DataFrame({"id": np.arange(n), "cluster": cluster, "copies": sizes,
                          "representative": cluster == np.arange(n), "family": family, "family_size": family_size})
    return table, dict(counts)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def same(self, i: int, j: int) -> bool:
        return self.root(i) == self.root(j)

    def join(self, i: int, j: int) -> None:
        self.parent[self.root(j)] = self.root(i)

    def groups(self) -> np.ndarray:
        """Group id per row: the smallest row id in its group."""
        roots = np.array([self.root(i) for i in range(len(self.parent))])
        return pd.Series(np.arange(len(roots))).groupby(roots).transform("min").to_numpy()


def pair_kind(a, b, rule: CopyRule) -> str:
    """The copy verdict on two training images at the smaller one's size (capped at MAX_SIDE), either
    way round: whole, portion (a shared region; templates are portions across images) or none."""
    small, large = (a, b) if a.width * a.height <= b.width * b.height else (b, a)
    scale = min(1.0, MAX_SIDE / max(small.size))
    size = (max(16, round(small.height * scale)), max(16, round(small.width * scale)))
    x, y = distance.to_uint8(small, size), distance.to_uint8(large, size)
    kinds = {judge(x, y, rule).kind, judge(y, x, rule).kind}
    return "whole" if "whole" in kinds else "portion" if "portion" in kinds else "none"


def histogram(table: pd.DataFrame, group: str = "cluster", size: str = "copies") -> dict[int, int]:
    """group size → number of groups of that size (copies per picture, or members per template family)."""
    heads = table[table[group] == table["id"]]
    return {int(c): int(n) for c, n in sorted(heads[size].value_counts().items())}


RANKS = {"copies": ("cluster", "copies", "dup"), "families": ("family", "family_size", "family")}


def top_captions(table: pd.DataFrame, index: TrainingIndex, top: int, rank: str = "copies") -> pd.DataFrame:
    """The ``top`` largest groups, one caption each, in the caption format ``generate`` reads: by
    ``copies`` (Carlini's selection: the most duplicated pictures) or by template ``families`` (Webster's:
    the layouts most training images share)."""
    if top < 1:
        raise InputError(f"--top {top}", "give a positive number of groups")
    if rank not in RANKS:
        raise InputError(f"--rank {rank}", f"use one of {', '.join(RANKS)}")
    group_col, size_col, prefix = RANKS[rank]
    rows = index.table.merge(table, on="id")
    url_col = role_column(rows.columns, SOURCE_COLUMNS)
    out = []
    groups = rows.groupby(group_col)
    heads = rows[rows[group_col] == rows["id"]]
    order = heads.sort_values([size_col, group_col], ascending=[False, True])[group_col]
    for cluster in order:
        grp = groups.get_group(cluster).sort_values("id")
        captioned = grp[grp["caption"].notna() & (grp["caption"].astype(str).str.strip() != "")]
        if captioned.empty:
            continue
        rep = captioned.iloc[0]
        out.append({"caption_id": f"{prefix}{int(cluster)}", "caption": str(rep["caption"]).strip(),
                    "copies": int(rep["copies"]), "family_size": int(rep["family_size"]),
                    "train_path": rep["path"], "train_id": int(rep["id"]),
                    **({"url": rep[url_col]} if url_col else {})})
        if len(out) == top:
            break
    return pd.DataFrame(out)
