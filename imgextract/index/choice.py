"""Which FAISS index to build for N vectors within a memory budget, and how to search it.

The rules follow autofaiss and the faiss wiki's guidelines:

* up to 50,000 vectors: ``Flat`` (exact; a few hundred MB at most);
* up to ~10^6, when the raw vectors fit the budget: ``IVF{K},Flat`` with K ≈ 4·√N (a power of
  two): exact distances inside the probed lists, and an IVF index can be memory-mapped;
* beyond, or when they do not fit: ``OPQ{m}_{4m},IVF{K}_HNSW32,PQ{m}x8`` with K = 16,384
  (≤ 10^7), 65,536 (≤ 3·10^8) or 131,072, and the largest m ∈ {64, 32, 16, 8} (m ≤ d/4, m | 4m)
  whose codes (N·m bytes) fit the budget.

Training uses a seeded sample of min(N, 64·K) vectors (faiss wants 39·K to 256·K). After
adding, ``nprobe`` (IVF) or ``efSearch`` (HNSW) is raised until recall@10 against exact search
on 1,000 held-out queries reaches ``TARGET_RECALL``; the value and the recall reached are
recorded in ``embedder.json``. Approximate candidates are re-ranked exactly against the float16
vectors kept beside the index (``vectors.f16``, memory-mapped) before any pixel test.
"""

from __future__ import annotations

import math
import re

import faiss
import numpy as np

from imgextract.errors import InputError

FLAT_MAX = 50_000
TARGET_RECALL = 0.95
RECALL_QUERIES = 1000
UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(text: str) -> int:
    """``4G``, ``512M``, ``2.5g`` → bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"--max-memory {text!r}", "give a size like 4G or 512M")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def lists_for(n: int) -> int:
    if n <= 1_000_000:
        return max(1, 2 ** round(math.log2(max(4 * math.sqrt(n), 1))))
    return 16384 if n <= 10_000_000 else 65536 if n <= 300_000_000 else 131072


def choose_factory(n: int, d: int, budget: int) -> str:
    """The index_factory string for n vectors of dimension d within ``budget`` bytes."""
    if n <= FLAT_MAX:
        return "Flat"
    k = lists_for(n)
    if n <= 1_000_000 and n * d * 4 * 1.1 <= budget:
        return f"IVF{k},Flat"
    for m in (64, 32, 16, 8):
        if m * 4 <= d and n * (m + 8) * 1.2 <= budget:
            return f"OPQ{m}_{4 * m},IVF{k}_HNSW32,PQ{m}x8"
    raise InputError(f"{n:,} vectors do not fit --max-memory {budget / 2**30:.1f} GiB even as 8-byte codes",
                     f"give at least --max-memory {math.ceil(n * 16 * 1.2 / 2**30)}G")


def training_sample(total: int, factory: str, seed: int = 0, limit: int | None = None) -> np.ndarray:
    """Sorted row ids to train on: min(N, 64·K) rows, K the number of lists (faiss asks for 39·K
    to 256·K; autofaiss trains on about 100 per list; k-means cost grows with the sample), and at
    most ``limit`` (the rows a quarter of the memory budget holds as float32)."""
    m = re.search(r"IVF(\d+)", factory)
    want = total if not m else min(total, 64 * int(m.group(1)))
    want = min(want, max(1, limit)) if limit is not None else want
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, want, replace=False)) if want < total else np.arange(total)


RERANK = (1, 4, 16, 64, 256)   # re-rank depths tried, as multiples of the default (max(4k, k + 16))


def tune(index, vectors: np.ndarray, seed: int = 0) -> dict:
    """Raise nprobe / efSearch until recall@10 of :func:`search` (re-ranked) on held-out queries
    reaches TARGET_RECALL; for compressed codes, when doubling it stops paying (recall up by < 0.01),
    re-rank a deeper list instead (``rerank``: compressed codes, e.g. PQ at 10^7+, can rank the true neighbours
    below the default 40; the exact re-rank then recovers them).

    ``vectors``: every indexed vector (float16 memmap is fine), for the exact answers.
    Returns the search parameters and the recall they reached (1.0 for exact indexes).
    """
    n = vectors.shape[0]
    ivf = _ivf(index)
    hnsw = _hnsw(index)
    if ivf is None and hnsw is None:
        return {"recall_at_10": 1.0, "params": {}}
    rng = np.random.default_rng(seed + 1)
    qids = rng.choice(n, min(RECALL_QUERIES, n), replace=False)
    queries = np.asarray(vectors[np.sort(qids)], dtype=np.float32)
    queries += rng.normal(0, 0.01, queries.shape).astype(np.float32)  # held out: not exactly a stored vector
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    k = min(10, n)
    truth = exact_top(vectors, queries, k)
    knob, value, top = ("nprobe", 1, ivf.nlist) if ivf is not None else ("efSearch", 16, 4096)
    params, recall = {}, 0.0
    depths = [min(n, default_depth(k) * t) for t in (RERANK if not _full_codes(index) else RERANK[:1])]
    for i, depth in enumerate(depths):
        last = i == len(depths) - 1 or depth >= n   # the last depth raises the knob to its top, as ever
        before = None
        while True:
            params = {knob: value, **({"rerank": depth} if i > 0 else {})}
            apply(index, params)
            recall = _recall(search(index, vectors, queries, k, params.get("rerank"))[1], truth)
            if recall >= TARGET_RECALL:
                return {"recall_at_10": recall, "params": params}
            if value >= top or (not last and before is not None and recall - before < 0.01):
                break   # this depth has stopped paying: re-rank deeper at the same setting
            before, value = recall, min(value * 2, top)
        if last:
            break
    return {"recall_at_10": recall, "params": params}


def _full_codes(index) -> bool:
    """Whether the index holds the vectors themselves (IVF-Flat, HNSW-Flat): its candidates come in
    exact order already, so re-ranking deeper cannot help and only the knob is tuned."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):   # OPQ/PCA in front: codes of a transform
        return False
    ivf = _ivf(index)
    if ivf is not None:
        return isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat)
    return isinstance(inner, faiss.IndexHNSWFlat)


def default_depth(k: int) -> int:
    """Approximate candidates re-ranked exactly per query, unless tuned deeper."""
    return max(4 * k, k + 16)


def search(index, vectors: np.ndarray | None, queries: np.ndarray, k: int,
           depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top k by inner product. An approximate index is asked for a wider list (``depth``, or
    :func:`default_depth`) that is re-ranked exactly against ``vectors`` (what the scan and the
    recall measurement both use); an exact one, or an index without stored vectors, is searched
    as it is."""
    k = min(k, index.ntotal)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if vectors is None or (_ivf(index) is None and _hnsw(index) is None):
        return index.search(queries, k)
    _, ids = index.search(queries, min(index.ntotal, max(depth or 0, default_depth(k))))
    return rerank(vectors, queries, ids, k)


def apply(index, params: dict) -> None:
    if "nprobe" in params and _ivf(index) is not None:
        _ivf(index).nprobe = int(params["nprobe"])
    if "efSearch" in params and _hnsw(index) is not None:
        _hnsw(index).efSearch = int(params["efSearch"])


EXACT_BUFFER = 64 * 2**20   # bytes exact_top's scores and their ranking may take per chunk (~16 per query and row)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int | None = None) -> np.ndarray:
    """Exact inner-product top-k ids, streaming over the (memory-mapped) vectors in chunks sized so that one
    chunk's scores and their ranking stay within ``EXACT_BUFFER`` (1,000 queries against 65,536 rows took a
    gigabyte, more than an index build's whole memory budget)."""
    chunk = chunk or max(256, EXACT_BUFFER // (16 * max(1, len(queries))))
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for start in range(0, vectors.shape[0], chunk):
        block = np.asarray(vectors[start:start + chunk], dtype=np.float32)
        s = queries @ block.T
        kk = min(k, s.shape[1])
        top = np.argpartition(s, s.shape[1] - kk, axis=1)[:, -kk:]          # this chunk's best kk per query
        all_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        all_i = np.concatenate([best_i, top + start], 1)
        del s, top
        keep = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, keep, 1), np.take_along_axis(all_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def rerank(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities for approximate candidates (ids, -1 = none), best k first."""
    sims = np.full(ids.shape, -np.inf, np.float32)
    for r in range(len(queries)):
        ok = ids[r] >= 0
        if ok.any():
            sims[r, ok] = np.asarray(vectors[ids[r, ok]], np.float32) @ queries[r]
    order = np.argsort(-sims, axis=1)[:, :k]
    out_ids = np.take_along_axis(ids, order, 1)
    out_sims = np.take_along_axis(sims, order, 1)
    out_ids[~np.isfinite(out_sims)] = -1
    return out_sims, out_ids


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def _ivf(index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index):
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):  # OPQ/PCA in front
        index = faiss.downcast_index(index.index)
    return getattr(index, "hnsw", None)
