"""Near-duplicates inside a training set: which pictures it holds many copies of.

Carlini et al. audited the most duplicated captions first: duplication is what makes a model
memorize. Candidates come from the index itself (k nearest neighbours of every row, in chunks,
kept when their similarity is at least ``similarity``), then each candidate pair is confirmed on
pixels when both images can be read: the smaller image's size, tiled L2 below ``threshold``
(re-encodes and resizes of one picture are copies; two photographs of one scene are not).
Confirmed pairs are joined into groups (union–find). A pair without readable pixels is kept on
similarity alone and counted as such.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

import numpy as np
import pandas as pd

from imgextract import distance
from imgextract.errors import InputError
from imgextract.index.store import TrainingIndex
from imgextract.progress import Step
from imgextract.sources.images import BadImage, open_rgb
from imgextract.sources.tables import SOURCE_COLUMNS, role_column

DUPLICATES_JSON = "duplicates.json"
MAX_SIDE = 128  # pixel confirmation size cap: copies are near-identical at any size


@dataclass(frozen=True)
class DuplicateParams:
    threshold: float = distance.DEFAULT_THRESHOLD  # tiled L2 below which two images are copies
    similarity: float = 0.9                         # embedding similarity a candidate pair needs
    k: int = 32                                     # neighbours looked at per row
    chunk: int = 4096                               # rows searched at once


def find_duplicates(index: TrainingIndex, params: DuplicateParams = DuplicateParams()
                    ) -> Generator[Step, None, tuple[pd.DataFrame, dict]]:
    """Yields progress; returns (one row per index row: id, cluster, copies, representative;
    counts of what was decided how)."""
    if not 0 < params.threshold <= 1:
        raise InputError(f"--threshold {params.threshold}", "use a tiled-L2 threshold in (0, 1]; 0.15 is the default")
    if not -1 <= params.similarity <= 1:
        raise InputError(f"--similarity {params.similarity}", "use a cosine similarity in [-1, 1]")
    n = index.faiss_index.ntotal
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    paths = index.table["path"].tolist()
    cache: dict = {}

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
    for start in range(0, n, params.chunk):
        stop = min(start + params.chunk, n)
        vectors = index.vector_rows(start, stop)
        sims, ids = index.search(vectors, k)
        for row, (srow, irow) in enumerate(zip(sims, ids)):
            i = start + row
            for s, j in zip(srow, irow):
                j = int(j)
                if j <= i or s < params.similarity or root(i) == root(j):
                    continue
                a, b = pixels(i), pixels(j)
                if a is None or b is None:
                    counts["pairs kept on similarity alone (pixels unavailable)"] += 1
                    parent[root(j)] = root(i)
                    continue
                if _copies(a, b, params.threshold):
                    counts["pairs confirmed on pixels"] += 1
                    parent[root(j)] = root(i)
                else:
                    counts["pairs similar but not copies on pixels"] += 1
        yield Step("duplicates", stop, n, "img")
    roots = np.array([root(i) for i in range(n)])
    # cluster id = the smallest row id in the group, which is also its representative
    first = pd.Series(np.arange(n)).groupby(roots).transform("min").to_numpy()
    sizes = pd.Series(first).map(pd.Series(first).value_counts()).to_numpy()
    table = pd.DataFrame({"id": np.arange(n), "cluster": first, "copies": sizes, "representative": first == np.arange(n)})
    return table, dict(counts)


def _copies(a, b, threshold: float) -> bool:
    """Tiled L2 at the smaller image's size (capped at MAX_SIDE), the larger fitted to it."""
    small, large = (a, b) if a.width * a.height <= b.width * b.height else (b, a)
    scale = min(1.0, MAX_SIDE / max(small.size))
    size = (max(4, round(small.height * scale)), max(4, round(small.width * scale)))
    x, y = distance.to_uint8(small, size), distance.to_uint8(large, size)
    tiled, _ = distance.exact_distances(x, [y])
    return bool(tiled[0] < threshold)


def histogram(table: pd.DataFrame) -> dict[int, int]:
    """copies → number of groups of that size."""
    reps = table[table["representative"]]
    return {int(c): int(n) for c, n in sorted(reps["copies"].value_counts().items())}


def top_captions(table: pd.DataFrame, index: TrainingIndex, top: int) -> pd.DataFrame:
    """The ``top`` most duplicated groups, one caption each, in the caption format ``generate`` reads."""
    if top < 1:
        raise InputError(f"--top {top}", "give a positive number of groups")
    rows = index.table.merge(table, on="id")
    url_col = role_column(rows.columns, SOURCE_COLUMNS)
    out = []
    groups = rows.groupby("cluster")
    order = rows[rows["representative"]].sort_values(["copies", "cluster"], ascending=[False, True])["cluster"]
    for cluster in order:
        grp = groups.get_group(cluster).sort_values("id")
        captioned = grp[grp["caption"].notna() & (grp["caption"].astype(str).str.strip() != "")]
        if captioned.empty:
            continue
        rep = captioned.iloc[0]
        out.append({"caption_id": f"dup{int(cluster)}", "caption": str(rep["caption"]).strip(),
                    "copies": int(rep["copies"]), "train_path": rep["path"], "train_id": int(rep["id"]),
                    **({"url": rep[url_col]} if url_col else {})})
        if len(out) == top:
            break
    return pd.DataFrame(out)
