"""Which FAISS index for N vectors within a budget, tuned to recall and re-ranked exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import run


def test_index_choice_rules():
    from imgextract.index.choice import choose_factory, parse_memory
    assert parse_memory("4G") == 4 * 2**30 and parse_memory("512m") == 512 * 2**20
    assert choose_factory(30_000, 512, parse_memory("4G")) == "Flat"
    assert choose_factory(1_000_000, 512, parse_memory("4G")) == "IVF4096,Flat"     # 2 GB of vectors fit
    assert choose_factory(1_000_000, 512, parse_memory("1G")).startswith("OPQ64_256,IVF4096_HNSW32,PQ64")
    assert choose_factory(2_000_000_000, 768, parse_memory("64G")) == "OPQ16_64,IVF131072_HNSW32,PQ16x8"
    with pytest.raises(Exception, match="do not fit"):
        choose_factory(2_000_000_000, 768, parse_memory("1G"))


def test_approximate_index_is_tuned_recorded_and_reranked_exactly(tmp_path):
    """An IVF index over clustered vectors (clip-retrieval layout): nprobe raised until recall@10 >= 0.95 at
    build, recorded, shown by `index info`; searches re-rank exactly, so their top 10 match exact search's."""
    from imgextract.index.choice import exact_top
    from imgextract.index.store import open_index
    from imgextract.demo.tiny import save_tiny_clip
    clip = save_tiny_clip(tmp_path / "clip")  # 32-d, only to name the model that "made" the vectors
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 32))
    x = (centers[rng.integers(0, 40, 4000)] + 0.4 * rng.normal(size=(4000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    for n, part in enumerate(np.array_split(np.arange(4000), 3)):
        np.save(tmp_path / "emb" / "img_emb" / f"img_emb_{n}.npy", x[part].astype(np.float16))
        pd.DataFrame({"image_path": [f"k{i}" for i in part], "caption": [f"c{i}" for i in part]}).to_parquet(
            tmp_path / "emb" / "metadata" / f"metadata_{n}.parquet")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, _, err = run("index", "build", tmp_path / "emb", "--name", "v", "--embeddings", "--embedder",
                       f"clip:{clip}", "--factory", "IVF64,Flat", env_extra=ix)
    assert code == 0, err
    record = json.loads((tmp_path / "ix" / "v" / "embedder.json").read_text())
    assert record["faiss_factory"] == "IVF64,Flat" and record["recall_at_10"] >= 0.95
    assert 1 <= record["faiss_params"]["nprobe"] <= 64
    code, out, _ = run("index", "info", "v", env_extra=ix)
    assert f"nprobe={record['faiss_params']['nprobe']}" in out and "recall@10" in out and "exact re-rank" in out
    idx = open_index(tmp_path / "ix" / "v")
    queries = x[rng.choice(4000, 50, replace=False)] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, ids = idx.search(queries, 10)
    truth = exact_top(idx.vectors, queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]) >= 0.95
    code, _, err = run("index", "build", tmp_path / "emb", "--name", "w", "--embeddings", "--embedder",
                       f"clip:{clip}", "--max-memory", "lots", env_extra=ix)
    assert code == 2 and err.startswith("error: --max-memory 'lots'"), err


def test_coarse_codes_get_a_deeper_rerank_instead_of_more_lists():
    """Codes too coarse to rank the true neighbours into the default 40 (4-byte PQ of tightly clustered
    vectors): probing more lists stops paying, so tune re-ranks a deeper list, and search uses it. An
    IVF-Flat index of the same vectors holds them whole (exact order already): nprobe alone is tuned."""
    import faiss

    from imgextract.index.choice import TARGET_RECALL, _full_codes, _recall, default_depth, exact_top, search, tune
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(8, 64))
    x = (centers[rng.integers(0, 8, 12000)] + 0.7 * rng.normal(size=(12000, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.index_factory(64, "IVF8,PQ4x4", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    vectors = x.astype(np.float16)
    got = tune(index, vectors)
    assert got["recall_at_10"] >= TARGET_RECALL and got["params"]["rerank"] > default_depth(10)
    queries = x[rng.choice(12000, 100, replace=False)] + 0.01 * rng.normal(size=(100, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_top(vectors, queries, 10)
    index.nprobe = 8   # every list: what remains is the codes' ranking
    shallow = _recall(search(index, vectors, queries, 10)[1], truth)
    deep = _recall(search(index, vectors, queries, 10, got["params"]["rerank"])[1], truth)
    assert shallow < 0.9 <= deep
    flat = faiss.index_factory(64, "IVF8,Flat", faiss.METRIC_INNER_PRODUCT)   # full vectors: only nprobe tuned
    flat.train(x)
    flat.add(x)
    assert _full_codes(flat) and not _full_codes(index)
    plain = tune(flat, vectors)
    assert "rerank" not in plain["params"] and plain["recall_at_10"] >= TARGET_RECALL
