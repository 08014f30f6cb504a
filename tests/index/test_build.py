import json

import numpy as np
import pytest

from imgextract.errors import InputError
from imgextract.app.commands import build_index
from imgextract.index.store import check_embedder, open_index
from imgextract.sources.images import open_rgb


def test_round_trip_every_image_finds_itself(pixel_index, train_dir):
    idx = open_index("train-pixel")
    assert len(idx.table) == 10
    emb = idx.load_embedder()
    images = [open_rgb(p) for p in idx.table["path"]]
    sims, ids = idx.search(emb.embed(images), 3)
    assert list(ids[:, 0]) == list(range(10))
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    assert (sims[:, 1] < 0.95).all()  # distinct photographs are not near each other
    row = idx.table.set_index("path").loc[str(train_dir / "coffee.png")]
    assert row["caption"] == "a photograph of coffee"
    assert row["width"] == 128 and len(row["sha256"]) == 64


def test_corrupt_image_is_listed_and_skipped(pixel_index, train_dir):
    assert [s["path"] for s in pixel_index.skipped] == [str(train_dir / "corrupt.png")]
    skipped = json.loads((pixel_index.path / "skipped.json").read_text())
    assert skipped[0]["path"].endswith("corrupt.png")


def test_table_source_with_extra_columns(tmp_path, train_dir, index_root):
    rows = ["file,caption,license"] + [f"{p.name},cap {p.stem},CC-BY" for p in sorted(train_dir.glob("*.png"))[:3]]
    csv = train_dir / "table.csv"
    csv.write_text("\n".join(rows))
    try:
        res = build_index(csv, str(tmp_path / "tab"), progress=False)
    finally:
        csv.unlink()
    idx = open_index(str(res.path))
    assert idx.table["license"].tolist() == ["CC-BY"] * 3
    assert idx.table["caption"].iloc[0].startswith("cap ")


def test_existing_index_is_not_overwritten_silently(pixel_index, train_dir):
    with pytest.raises(InputError, match="already exists"):
        build_index(train_dir, "train-pixel", progress=False)


def test_index_of_another_embedder_is_refused(pixel_index, tmp_path):
    idx = open_index("train-pixel")
    check_embedder(idx, "pixel")
    with pytest.raises(InputError, match="built with embedder 'pixel'"):
        check_embedder(idx, "clip:ViT-B-32/openai")


def _clip_retrieval_vectors(folder, parts=3, rows=3000, dim=32, seed=0):
    """clip-retrieval's layout (img_emb/img_emb_N.npy, metadata/metadata_N.parquet) of clustered vectors."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, dim))
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    for p in range(parts):
        x = centers[rng.integers(0, 64, rows)] + 0.5 * rng.normal(size=(rows, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(folder / "img_emb" / f"img_emb_{p}.npy", x.astype(np.float16))
        meta = {"image_path": [f"{p}-{i}" for i in range(rows)], "caption": [f"caption {p}-{i}" for i in range(rows)]}
        if p == 1:  # one part carries a column the others lack
            meta["LICENSE"] = ["cc-by"] * rows
        pd.DataFrame(meta).to_parquet(folder / "metadata" / f"metadata_{p}.parquet")
    return folder


def test_ivf_index_is_filled_part_by_part_and_answers_like_an_exact_one(tmp_path, index_root):
    """IVF lists are written per part and merged on disk (index.ivfdata); the table is streamed with
    global ids; searches agree with an exact index of the same vectors."""
    from imgextract.demo.tiny import save_tiny_clip
    emb = _clip_retrieval_vectors(tmp_path / "emb")
    clip = f"clip:{save_tiny_clip(tmp_path / 'clip', embed_dim=32)}"
    ivf = build_index(emb, str(tmp_path / "ivf"), clip, embeddings=True, factory="IVF64,Flat", progress=False)
    flat = build_index(emb, str(tmp_path / "flat"), clip, embeddings=True, factory="Flat", progress=False)
    assert (ivf.path / "index.ivfdata").is_file() and not (flat.path / "index.ivfdata").exists()
    assert not (ivf.path / "parts").exists()
    a, b = open_index(str(ivf.path), gpu="off"), open_index(str(flat.path), gpu="off")
    assert a.faiss_index.ntotal == 9000 and a.table["id"].tolist() == list(range(9000))
    assert a.table["image_path"].iloc[3000] == "1-0" and a.table["LICENSE"].iloc[3000] == "cc-by"
    assert a.table["LICENSE"].iloc[0] is None and a.table["LICENSE"].iloc[6000] is None
    q = np.asarray(b.vectors[::45], np.float32)
    q += np.random.default_rng(1).normal(0, 0.02, q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _, got = a.search(q, 10)
    _, want = b.search(q, 10)
    assert np.mean(got[:, 0] == want[:, 0]) >= 0.95
    assert np.mean([len(set(x) & set(y)) / 10 for x, y in zip(got, want)]) >= 0.9
    assert json.loads((ivf.path / "embedder.json").read_text())["recall_at_10"] >= 0.95


def test_hashes_only_when_asked_and_no_thumbnails_when_refused(tmp_path, train_dir, index_root):
    """Default: no stored hashes (scans hash what they decode); --hashes: imagehash's own, per row.
    thumb_sizes=None (--no-thumbs): no thumbnail store, and a scan still finds every image itself."""
    import imagehash
    from imgextract.stages.scan import ScanParams, scan
    plain = build_index(train_dir, str(tmp_path / "plain"), progress=False, thumb_sizes=None)
    hashed = build_index(train_dir, str(tmp_path / "hashed"), progress=False, hashes=True)
    a, b = open_index(str(plain.path)), open_index(str(hashed.path))
    assert a.table["phash"].isna().all() and a.table["whash"].isna().all()
    for path, ph, wh in zip(b.table["path"], b.table["phash"], b.table["whash"]):
        im = open_rgb(path)
        assert ph == str(imagehash.phash(im)) and wh == str(imagehash.whash(im))
    assert json.loads((plain.path / "thumbs.json").read_text()) == {} and not list((plain.path / "thumbs").iterdir())
    assert b.thumbs((128, 128)) is not None and a.thumbs((128, 128)) is None
    notes = [str(e) for e in scan(train_dir, ScanParams(index=str(plain.path), k=2, relative_n=0), tmp_path / "s")]
    assert any("holds no thumbnails" in n for n in notes)
    import pandas as pd
    m = pd.read_parquet(tmp_path / "s" / "matches.parquet")
    best = m[m["rank"] == 0]
    assert (best["train_path"] == best["generation_path"]).all() and best["memorized"].all()
    assert (best["phash_distance"] == 0).all()   # hashed on decode, though the index stores none
