import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgextract.scan import MATCH_COLUMNS, ScanParams, scan


def jpeg(im, q=70):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def noisy(im, sigma=6, seed=0):
    a = np.asarray(im, dtype=np.float32) + np.random.default_rng(seed).normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def generations(tmp_path_factory, train_dir, photos):
    """Three near-copies of training images among distinct photographs never indexed."""
    d = tmp_path_factory.mktemp("gens")
    jpeg(Image.open(train_dir / "astronaut.png")).save(d / "copy_jpeg.png")
    noisy(Image.open(train_dir / "rocket.png").convert("RGB")).save(d / "copy_noise.png")
    Image.open(train_dir / "coffee.png").resize((96, 96), Image.BICUBIC).save(d / "copy_resized.png")
    for name in ["clock", "page", "text", "china", "flower"]:
        photos[name].resize((128, 128)).save(d / f"distinct_{name}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return d


def test_scan_flags_planted_copies_only(generations, pixel_index, tmp_path):
    out = tmp_path / "scan"
    list(scan(generations, ScanParams(index="train-pixel", k=3), out))
    m = pd.read_parquet(out / "matches.parquet")
    assert list(m.columns) == MATCH_COLUMNS
    best = m.sort_values("tiled_l2").drop_duplicates("generation_path").set_index(
        m.sort_values("tiled_l2").drop_duplicates("generation_path")["generation_path"].str.rsplit("/", n=1).str[1])
    for gen, train in [("copy_jpeg.png", "astronaut"), ("copy_noise.png", "rocket"), ("copy_resized.png", "coffee")]:
        assert best.loc[gen, "memorized"], best.loc[gen]
        assert best.loc[gen, "train_path"].endswith(f"{train}.png")
        assert best.loc[gen, "rank"] == 0
        assert best.loc[gen, "phash_distance"] <= 8
    distinct = best[best.index.str.startswith("distinct_")]
    assert len(distinct) == 5 and not distinct["memorized"].any()
    assert (distinct["tiled_l2"] > 0.2).all()
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["memorized_generations"] == 3
    assert {r["train_path"].rsplit("/", 1)[1] for r in summary["memorized_images"]} == {
        "astronaut.png", "rocket.png", "coffee.png"}
    assert [s["path"].rsplit("/", 1)[1] for s in summary["skipped"]] == ["broken.jpg"]


def test_scan_resumes_finished_shards(generations, pixel_index, tmp_path):
    out = tmp_path / "scan"
    params = ScanParams(index="train-pixel", k=2)
    list(scan(generations, params, out))
    shard = next((out / "scan").glob("*/shard-00000.parquet"))
    stamp = shard.stat().st_mtime_ns
    list(scan(generations, params, out))
    assert shard.stat().st_mtime_ns == stamp  # not recomputed
    list(scan(generations, ScanParams(index="train-pixel", k=2, threshold=0.05), out))
    assert len(list((out / "scan").glob("*/shard-00000.parquet"))) == 2  # other params, other folder
