import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from imgextract import distance, rundir
from imgextract.stages.cliques import CliqueParams, largest_clique, pairwise_tiled_l2, run_cliques


def test_pairwise_matrix_equals_direct_per_pair_computation(photos):
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "china"]
    imgs = np.stack([np.asarray(distance.fit(photos[n], (48, 70))) for n in names])  # uneven tiles
    fast = pairwise_tiled_l2(imgs, grid=4)
    floats = imgs.astype(np.float32) / 255
    for i in range(len(names)):
        for j in range(len(names)):
            assert fast[i, j] == pytest.approx(distance.tiled_l2(floats[i], floats[j], 4), abs=1e-4)
    assert np.allclose(fast, fast.T) and (np.diag(fast) == 0).all()
    assert np.allclose(pairwise_tiled_l2(floats, grid=4), fast, atol=1e-4)  # float input too
    # the GPU path's arithmetic (torch), run on the CPU here
    assert np.allclose(pairwise_tiled_l2(imgs, grid=4, device="torch"), fast, atol=1e-4)


def _planted(n=60, k=12, p=0.1, seed=0):
    rng = np.random.default_rng(seed)
    adj = rng.random((n, n)) < p
    adj = np.triu(adj, 1)
    adj = adj | adj.T
    members = sorted(rng.choice(n, k, replace=False).tolist())
    for a in members:
        for b in members:
            if a != b:
                adj[a, b] = True
    return adj, members


def test_planted_clique_is_found_with_exact_size():
    adj, members = _planted()
    res = largest_clique(adj)
    assert res.exact and res.members == members and len(res.members) == 12


def test_bound_hit_is_reported():
    adj, _ = _planted(n=80, k=9, p=0.3, seed=1)
    res = largest_clique(adj, max_cliques=1)
    assert not res.exact and res.upper_bound >= len(res.members)


def test_empty_and_edgeless_graphs():
    assert largest_clique(np.zeros((0, 0), bool)).members == []
    res = largest_clique(np.zeros((5, 5), bool))
    assert len(res.members) == 1 and res.exact


def _fake_run(root, groups):
    """A run folder whose samples are given images, laid out as `generate` writes them."""
    rows = []
    for cid, images in groups.items():
        for i, im in enumerate(images):
            rel = f"samples/shard-00000/c{cid}_s{i:05d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            im.save(root / rel)
            rows.append({"caption_id": cid, "caption": f"caption {cid}", "sample_index": i, "seed": i, "file": rel})
    rundir.write_parquet_atomic(root / "samples/shard-00000.parquet", pa.Table.from_pylist(rows))
    rundir.write_json_atomic(root / "run.json", {"imgextract_run": 1})


def test_run_cliques_flags_the_memorized_caption_only(tmp_path, photos):
    rng = np.random.default_rng(0)
    base = np.asarray(distance.fit(photos["astronaut"], (64, 64)), dtype=np.float32)
    copies = [Image.fromarray(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8))
              for _ in range(11)]
    others = [distance.fit(photos[n], (64, 64)) for n in ["coffee", "chelsea", "rocket", "camera", "coins",
                                                          "moon", "retina", "clock", "page", "text", "china"]]
    # caption "b": 3 near-copies among distinct images, below the size threshold
    _fake_run(tmp_path, {"a": copies[:10] + [others[0]], "b": copies[:3] + others[1:9]})
    table = run_cliques(tmp_path, CliqueParams(delta=0.15, min_size=10)).set_index("caption_id")
    assert table.loc["a", "largest_clique"] == 10 and table.loc["a", "flagged"]
    assert table.loc["b", "largest_clique"] == 3 and not table.loc["b", "flagged"]
    assert table.loc["a", "mean_distance"] < 0.05 and table.loc["a", "exact"]
    assert table.loc["a", "delta"] == 0.15 and table.loc["a", "min_size"] == 10
    assert all(p.endswith(".png") for p in table.loc["a", "members"])


def test_clique_flags_say_whether_the_index_confirms_them(tmp_path, photos):
    """A clique is a consistent image, not yet a copy: its label says whether a scan found the training image."""
    base = np.asarray(distance.fit(photos["astronaut"], (64, 64)), dtype=np.float32)
    rng = np.random.default_rng(1)
    copies = [Image.fromarray(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8))
              for _ in range(10)]
    _fake_run(tmp_path, {"a": copies})
    table = run_cliques(tmp_path, CliqueParams(delta=0.15, min_size=10))
    assert table["confirmation"].tolist() == ["not checked (no scan of this run yet)"]
    member = table["members"].iat[0][3]
    matches = pd.DataFrame({"generation_path": [member, member], "train_id": [7, 8], "memorized": [False, False]})
    matches.to_parquet(tmp_path / "matches.parquet")
    table = run_cliques(tmp_path, CliqueParams(delta=0.15, min_size=10))
    assert table["confirmation"].tolist() == ["unconfirmed (no training image within the threshold)"]
    matches.loc[1, "memorized"] = True
    matches.to_parquet(tmp_path / "matches.parquet")
    table = run_cliques(tmp_path, CliqueParams(delta=0.15, min_size=10))
    assert table["confirmation"].tolist() == ["confirmed (training image #8 within the threshold)"]
