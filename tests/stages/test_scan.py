import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgextract.stages.scan import MATCH_COLUMNS, ScanParams, scan


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
        assert best.loc[gen, "relative_l2"] < 0.5  # far closer to it than to the other training images
    distinct = best[best.index.str.startswith("distinct_")]
    assert len(distinct) == 5 and not distinct["memorized"].any()
    assert (distinct["tiled_l2"] > 0.2).all()
    # under the tiled criterion the relative distance is measured for memorized candidates only
    assert distinct["relative_l2"].isna().all()
    assert m.loc[~m["exact"], "tiled_l2"].min() >= 0.25  # bounds are only kept at or above exact_below
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


def test_relative_distance_by_hand():
    from imgextract.stages.scan import relative_distance
    rel = relative_distance(np.array([0.1, 0.4, 0.4, 0.4]), n=3, alpha=0.5)
    assert rel[0] == pytest.approx(0.1 / (0.5 * 0.4))
    assert rel[1] == pytest.approx(0.4 / (0.5 * 0.3))
    assert np.isnan(relative_distance(np.array([0.1, 0.2]), n=0, alpha=0.5)).all()


def test_relative_criterion(generations, pixel_index, tmp_path):
    out = tmp_path / "rel"
    list(scan(generations, ScanParams(index="train-pixel", k=3, criterion="relative"), out))
    m = pd.read_parquet(out / "matches.parquet")
    assert (m["memorized"] == (m["relative_l2"] < 1.0)).all()
    hits = set(m.loc[m["memorized"], "generation_path"].str.rsplit("/", n=1).str[1])
    assert hits == {"copy_jpeg.png", "copy_noise.png", "copy_resized.png"}
    assert m["exact"].all() and m["relative_l2"].notna().all()  # every candidate measured: no pruning
    distinct = m[m["generation_path"].str.contains("distinct_")]
    assert (distinct["relative_l2"] > 1.0).all()


def test_thumbnail_pruning_changes_no_verdict(generations, pixel_index, tmp_path):
    """The pruned scan against an all-exact scan (exact_below 2: nothing pruned) of the same data."""
    pruned, full = tmp_path / "pruned", tmp_path / "full"
    list(scan(generations, ScanParams(index="train-pixel", k=5), pruned))
    list(scan(generations, ScanParams(index="train-pixel", k=5, exact_below=2.0), full))
    a = pd.read_parquet(pruned / "matches.parquet").set_index(["generation_path", "rank"]).sort_index()
    b = pd.read_parquet(full / "matches.parquet").set_index(["generation_path", "rank"]).sort_index()
    assert a.index.equals(b.index) and b["exact"].all()
    assert (~a["exact"]).sum() >= 5  # the thumbnails did prune (128 px generations of 128 px images)
    assert a["memorized"].equals(b["memorized"]) and a["copy_kind"].equals(b["copy_kind"])
    assert a["train_id"].equals(b["train_id"])
    ex = a["exact"]
    for col in ["phash_distance", "dhash_distance", "whash_distance"]:
        # the index stores no hashes: a scan hashes the copies it finds, the same in both scans
        assert a[col].equals(b[col]) and a["memorized"].any()
        assert (a.loc[a["memorized"], col] >= 0).all()
        found = (a["copy_kind"] != "none") | a["memorized"]   # only the rows of copies carry hashes
        assert ((a[col] >= 0) == found).all()
    assert np.array_equal(a.loc[ex, "tiled_l2"], b.loc[ex, "tiled_l2"])  # exact values are the same numbers
    assert (a.loc[~ex, "tiled_l2"] <= b.loc[~ex, "tiled_l2"]).all()  # the rest are lower bounds
    assert (a.loc[~ex, "l2"] <= b.loc[~ex, "l2"]).all()


def test_index_without_thumbnails_makes_them_on_demand(generations, pixel_index, train_dir, tmp_path):
    """An index built --no-thumbs: the k candidates' thumbnails are made from their decoded pixels,
    bit for bit the stored ones, so its scan prunes and judges exactly what the thumbnail index's does
    (the 96 px generation has no stored thumbnails in either: made on demand in both)."""
    from imgextract.app.commands import build_index
    bare = build_index(train_dir, str(tmp_path / "bare"), "pixel", progress=False, thumb_sizes=None)
    stored, made = tmp_path / "stored", tmp_path / "made"
    list(scan(generations, ScanParams(index="train-pixel", k=5, relative_n=0), stored))
    list(scan(generations, ScanParams(index=str(bare.path), k=5, relative_n=0), made))
    a = pd.read_parquet(stored / "matches.parquet").set_index(["generation_path", "rank"]).sort_index()
    b = pd.read_parquet(made / "matches.parquet").set_index(["generation_path", "rank"]).sort_index()
    assert (~b["exact"]).sum() >= 5 and b["memorized"].sum() == 3     # pruned, and every planted copy found
    pd.testing.assert_frame_equal(a, b)


def test_duplication_view_from_run_captions():
    from imgextract.stages.scan import duplication_view
    train = pd.DataFrame({"id": [0, 1, 2, 3], "path": ["/t/a.png", "/t/b.png", "/t/c.png", "/t/d.png"]})
    captions = pd.DataFrame({"caption_id": ["0", "1", "2", "3"], "train_path": train["path"],
                             "copies": [100, 10, 1, 1]})
    matches = pd.DataFrame({"generation_path": ["g0", "g1", "g2", "g3", "g4"],
                            "caption_id": ["0", "0", "1", "2", "3"], "train_id": [0, 0, 1, 2, 0],
                            "memorized": [True, True, False, False, True]})
    view = {r["copies"]: r for r in duplication_view(matches, train, captions)}
    assert view[100]["memorized_images"] == 1 and view[100]["sample_rate"] == 1.0
    assert view[10]["memorized_images"] == 0 and view[10]["samples"] == 1
    # caption "3" drew training image 0: a memorized sample at level 1, but no level-1 image memorized
    assert view[1]["images"] == 2 and view[1]["memorized_images"] == 0 and view[1]["sample_rate"] == 0.5
    assert duplication_view(matches, train, None) == []
    # a template family's member (seen once) belongs to no level: neither its image nor its captions' samples
    family = captions.assign(family=[None, None, None, "workshop"])
    view = {r["copies"]: r for r in duplication_view(matches, train, family)}
    assert view[1]["images"] == 1 and view[1]["samples"] == 1 and view[1]["memorized_samples"] == 0


def test_shard_pipeline_keeps_row_order_across_chunks(generations, pixel_index, monkeypatch):
    """Chunks of 2 (decode, embed and candidate tests of neighbouring chunks overlap) give the rows of
    one chunk, in the input order, with the unreadable generation skipped and ``collect`` aligned."""
    from imgextract.index.store import open_index
    from imgextract.stages import scan as S
    index = open_index("train-pixel")
    embedder = index.load_embedder("cpu")
    files = sorted(str(p) for p in generations.iterdir())
    rows = pd.DataFrame({"generation_path": files[::-1]})       # not sorted: the order must be kept, not rebuilt
    params = ScanParams(index="train-pixel", k=3)
    whole, whole_bad = S.scan_shard(rows, index, embedder, S.TrainingImages(index), params, workers=2)
    monkeypatch.setattr(S, "CHUNK", 2)
    collect = {}
    piped, piped_bad = S.scan_shard(rows, index, embedder, S.TrainingImages(index), params, workers=2,
                                    collect=collect)
    assert len(files) > 4 * 2                                  # several chunks in flight
    pd.testing.assert_frame_equal(piped, whole)
    assert piped["generation_path"].drop_duplicates().tolist() == [f for f in files[::-1]
                                                                   if not f.endswith("broken.jpg")]
    assert [b["path"] for b in piped_bad] == [b["path"] for b in whole_bad] == [str(generations / "broken.jpg")]
    got = collect["generations"]
    assert [g is None for g in got] == [f.endswith("broken.jpg") for f in rows["generation_path"]]
    for f, g, v in zip(rows["generation_path"], got, collect["vectors"]):
        if g is not None:
            assert g.pixels.shape[:2] == Image.open(f).size[::-1]
            np.testing.assert_array_equal(v, embedder.embed([g.image])[0])
