import json

import numpy as np
import pytest
from PIL import Image

from imgextract.errors import InputError
from imgextract.index import build_index, check_embedder, open_index
from imgextract.sources import open_rgb


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


def test_clip_embedder_from_local_folder(tmp_path, train_dir):
    from imgextract.tiny import save_tiny_clip
    clip_dir = save_tiny_clip(tmp_path / "clip")
    res = build_index(train_dir, str(tmp_path / "clipidx"), f"clip:{clip_dir}", progress=False)
    idx = open_index(str(res.path))
    assert idx.embedder["dimension"] == 32 and idx.embedder["spec"] == f"clip:{clip_dir.resolve()}"
    q = Image.open(train_dir / "rocket.png")
    _, ids = idx.search(idx.load_embedder("cpu").embed([q]), 1)
    assert idx.table["path"].iat[int(ids[0, 0])].endswith("rocket.png")
    check_embedder(idx, f"clip:{clip_dir}")
    with pytest.raises(InputError):
        check_embedder(idx, "pixel")


def test_remove_own_deletes_only_marked_folders_and_never_through_links(tmp_path):
    from imgextract.index import TEMP_MARKER, remove_own
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(InputError):
        remove_own(foreign, foreign)  # no marker
    ours = tmp_path / "ours"
    (ours / "parts").mkdir(parents=True)
    (ours / TEMP_MARKER).write_text("")
    (ours / "link").symlink_to(foreign)
    with pytest.raises(InputError):
        remove_own(ours / "link", ours)  # a name inside our folder that leads outside it
    (ours / "escape").symlink_to(foreign, target_is_directory=True)
    with pytest.raises(InputError):
        remove_own(ours / "escape" / ".", ours)  # resolves outside the root
    assert (foreign / "keep.txt").read_text() == "user data"
    remove_own(ours / "parts", ours)
    assert not (ours / "parts").exists() and (ours / TEMP_MARKER).exists()
    remove_own(ours, ours)
    assert not ours.exists() and (foreign / "keep.txt").exists()
