"""`index duplicates`: copies of one picture group together, different pictures (even of one scene)
stay apart, and the most duplicated captions feed straight into `generate`."""

from __future__ import annotations

import io
import json

import pandas as pd
from PIL import Image

from helpers import run


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_duplicate_groups_template_families_and_top_captions(tmp_path, photos, tiny_pipeline_dir):
    from imgextract.demo.composites import templated
    from imgextract.demo.photos import photo
    train = tmp_path / "train"
    train.mkdir()
    rocket, china = photos["rocket"].resize((96, 96)), photos["china"].resize((96, 96))
    left, right = photo("stereo_motorcycle_left"), photo("stereo_motorcycle_right")
    background = photos["coins"].resize((96, 96))
    images = {
        "rocket": rocket, "rocket_jpeg": jpeg(rocket, 70), "rocket_small": rocket.resize((80, 80), Image.BICUBIC),
        "china": china, "china_jpeg": jpeg(china, 60),
        # one photograph cropped twice, the frame moved by 8%: a moved copy, grouped
        "cat_a": photos["chelsea"].crop((0, 0, 300, 300)).resize((96, 96)),
        "cat_b": photos["chelsea"].crop((24, 16, 324, 316)).resize((96, 96)),
        # one scene, two photographs (a stereo pair: two viewpoints): not copies
        "moto_left": left.crop((0, 0, 500, 500)).resize((96, 96)),
        "moto_right": right.crop((0, 0, 500, 500)).resize((96, 96)),
        "coffee": photos["coffee"].resize((96, 96)),
        # a template family: one layout, new content in the window
        "layout_a": templated(background, photos["astronaut"]), "layout_b": templated(background, photos["camera"]),
        "layout_c": templated(background, photos["retina"]),
    }
    for name, im in images.items():
        im.save(train / f"{name}.png")
        (train / f"{name}.txt").write_text(f"a picture of {name.split('_')[0]}")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    assert run("index", "build", train, "--name", "t", env_extra=ix)[0] == 0
    code, out, err = run("index", "duplicates", "t", "--out", tmp_path / "dups.parquet", "--similarity", "0.2",
                         "--top", "2", "--captions-out", tmp_path / "top.parquet", env_extra=ix)
    assert code == 0, err
    assert "pairs similar but not copies on pixels" in err
    dups = pd.read_parquet(tmp_path / "dups.parquet")
    table = pd.read_parquet(tmp_path / "ix" / "t" / "images.parquet")
    assert list(dups.columns) == ["id", "cluster", "copies", "representative", "family", "family_size"]
    by_name = dict(zip(table["path"].str.rsplit("/", n=1).str[1].str[:-4], dups.set_index("id").loc[table["id"]]
                       .itertuples()))
    assert len({by_name[n].cluster for n in ("rocket", "rocket_jpeg", "rocket_small")}) == 1
    assert by_name["rocket"].copies == 3 and by_name["china"].copies == 2
    assert by_name["china"].cluster == by_name["china_jpeg"].cluster != by_name["rocket"].cluster
    assert by_name["cat_a"].cluster == by_name["cat_b"].cluster and by_name["cat_a"].copies == 2
    # two viewpoints are not copies of each other (their common, distant background may make them a family)
    assert by_name["moto_left"].cluster != by_name["moto_right"].cluster and by_name["moto_left"].copies == 1
    assert by_name["coffee"].copies == 1 and by_name["coffee"].family_size == 1
    assert len({by_name[n].family for n in ("layout_a", "layout_b", "layout_c")}) == 1
    assert by_name["layout_a"].family_size == 3 and by_name["layout_a"].copies == 1
    assert dups.groupby("cluster")["representative"].sum().eq(1).all()
    top = pd.read_parquet(tmp_path / "top.parquet")
    assert top["copies"].tolist() == [3, 2] and top["caption"].tolist() == ["a picture of rocket", "a picture of cat"]
    code, out, _ = run("index", "info", "t", env_extra=ix)
    assert "groups by copies: 3x: 1, 2x: 2, 1x: 6" in out and "template families by size: 3 images: 1" in out, out
    record = json.loads((tmp_path / "ix" / "t" / "duplicates.json").read_text())
    assert record["groups"] == 9 and record["families_by_size"]["3"] == 1
    # Webster's selection: captions ranked by template family size
    code, _, err = run("index", "duplicates", "t", "--out", tmp_path / "d2.parquet", "--similarity", "0.5",
                       "--top", "1", "--captions-out", tmp_path / "families.parquet", "--rank", "families", env_extra=ix)
    assert code == 0, err
    fam = pd.read_parquet(tmp_path / "families.parquet")
    assert fam["family_size"].tolist() == [3] and fam["caption"].iat[0] == "a picture of layout"
    # the captions file is generate's input as it is
    code, out, err = run("generate", tmp_path / "top.parquet", "--model", tiny_pipeline_dir, "--out", tmp_path / "r",
                         "--samples", "1", "--steps", "2", "--size", "32", "32", "--device", "cpu")
    assert code == 0, err
    caps = pd.read_parquet(tmp_path / "r" / "captions.parquet")
    assert caps["copies"].tolist() == [3, 2] and caps["train_path"].notna().all()


def test_duplicates_bad_arguments(tmp_path, photos):
    train = tmp_path / "train"
    train.mkdir()
    photos["coffee"].resize((64, 64)).save(train / "a.png")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    assert run("index", "build", train, "--name", "t", env_extra=ix)[0] == 0
    code, _, err = run("index", "duplicates", "t", "--out", tmp_path / "d.parquet", "--top", "3", env_extra=ix)
    assert code == 2 and err.startswith("error: --top and --captions-out go together"), err
    code, _, err = run("index", "duplicates", "t", "--out", tmp_path / "d.csv", env_extra=ix)
    assert code == 2 and err.startswith("error: --out"), err
    code, _, err = run("index", "duplicates", "t", "--out", tmp_path / "d.parquet", "--threshold", "0", env_extra=ix)
    assert code == 2 and err.startswith("error: --threshold 0"), err
    assert not (tmp_path / "d.parquet").exists()
