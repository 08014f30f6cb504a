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
