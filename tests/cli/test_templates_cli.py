"""Webster's templates with masks through the installed CLI: `index build` of a templates folder keeps each
mask with the index, and `scan`/`guard` judge a generation that copies a template's fixed layout as that
template, naming its mask; the same image indexed without its mask is only a portion, an unrelated
photograph is not accused, and a copy of the varying window alone is a portion of that image, not its template."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import run
from imgextract.copies import masked_mse
from imgextract.demo import composites as cp

SIZE = 256


@pytest.fixture(scope="module")
def templates_scan(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    folder, plain, gens = root / "templates", root / "plain", root / "gens"
    for d in (folder, plain, gens):
        d.mkdir()
    view = {n: cp.square(cp.photo(n), SIZE) for n in ("china", "retina", "colorwheel", "coffee", "astronaut",
                                                      "camera", "page")}
    cp.templated(view["china"], view["retina"]).save(folder / "shop.png")
    window = np.full((SIZE, SIZE), 255, np.uint8)
    window[SIZE // 4:3 * SIZE // 4, SIZE // 4:3 * SIZE // 4] = 0       # black: where its copies vary
    Image.fromarray(window).save(folder / "shop_mask.png")
    view["coffee"].save(folder / "mug.png")
    left = np.full((SIZE, SIZE), 255, np.uint8)
    left[:, SIZE // 2:] = 0
    Image.fromarray(left).save(folder / "mug_mask.png")
    (root / "outside.png").write_bytes((folder / "mug.png").read_bytes())
    pd.DataFrame({"url": ["https://shop.example/a.jpg", "https://shop.example/b.jpg", "https://x/c.jpg"],
                  "img_file": ["shop.png", "mug.png", "../outside.png"],
                  "mask_file": ["shop_mask.png", "mug_mask.png", "mug_mask.png"]}).to_parquet(folder / "metadata.parquet")
    cp.templated(view["china"], view["retina"]).save(plain / "shop.png")   # the same image, no mask
    view["page"].save(plain / "page.png")
    cp.templated(view["china"], view["colorwheel"]).save(gens / "shop_copy.png")   # the layout, a new window
    mug = view["coffee"].copy()
    mug.paste(view["astronaut"].crop((SIZE // 2, 0, SIZE, SIZE)), (SIZE // 2, 0))
    mug.save(gens / "mug_copy.png")
    view["camera"].save(gens / "unrelated.png")
    cp.templated(view["astronaut"], view["retina"]).save(gens / "window_only.png")   # the varying part alone
    code, out, err = run("index", "build", folder, "--name", root / "index")
    assert code == 0, err
    code, _, err2 = run("index", "build", plain, "--name", root / "plain-index")
    assert code == 0, err2
    for index, out_dir in (("index", "scan"), ("plain-index", "plain-scan")):
        code, _, e = run("scan", gens, "--index", root / index, "--out", root / out_dir)
        assert code == 0, e
    return root, out, err


def best(root, scan) -> pd.DataFrame:
    m = pd.read_parquet(root / scan / "matches.parquet")
    order = m["copy_kind"].map({"whole": 3, "template": 2, "portion": 1, "none": 0}) * 10 + m["copied_share"]
    rows = m.loc[order.groupby(m["generation_path"]).idxmax()]
    return rows.set_index(rows["generation_path"].str.rsplit("/", n=1).str[1].str[:-4])


def test_the_masks_travel_with_the_index_and_a_row_outside_the_folder_is_skipped(templates_scan):
    root, out, err = templates_scan
    assert "templates source" in out and "1 skipped" in out, out
    table = pd.read_parquet(root / "index" / "images.parquet")
    assert sorted(table["template_mask"]) == ["mug_mask.png", "shop_mask.png"]
    assert table["template_region"].str.match(r"^\d+x\d+:[0-9a-f]+$").all()
    assert set(table["url"]) == {"https://shop.example/a.jpg", "https://shop.example/b.jpg"}
    skipped = json.loads((root / "index" / "skipped.json").read_text())
    assert len(skipped) == 1 and "outside" in skipped[0]["reason"]


def test_a_masked_template_copy_is_found_and_named_with_its_mask(templates_scan):
    root, _, _ = templates_scan
    rows = best(root, "scan")
    for gen, train, mask in (("shop_copy", "shop.png", "shop_mask.png"), ("mug_copy", "mug.png", "mug_mask.png")):
        row = rows.loc[gen]
        assert row["copy_kind"] == "template" and row["memorized"] and row["template_mask"] == mask, row
        assert row["train_path"].endswith(train) and row["copied_share"] > 0.9
        # Webster's masked MSE, recomputed here from the files, far under his 2,500
        mask_px = np.asarray(Image.open(root / "templates" / mask).convert("L")) >= 128
        brute = masked_mse(np.asarray(Image.open(root / "gens" / f"{gen}.png").convert("RGB")),
                           np.asarray(Image.open(root / "templates" / train).convert("RGB")), mask_px)
        assert row["template_mse"] == pytest.approx(brute, abs=1.0) and brute < 2500
    assert rows.loc["unrelated", "copy_kind"] == "none" and not rows.loc["unrelated", "memorized"]
    window = rows.loc["window_only"]          # the varying window alone: a portion of that image, not its template
    assert window["copy_kind"] == "portion" and window["template_mask"] == "", window
    m = pd.read_parquet(root / "scan" / "matches.parquet")
    assert (m.loc[m["copy_kind"] != "template", "template_mask"] == "").all()
    summary = json.loads((root / "scan" / "summary.json").read_text())
    assert {r["template_mask"] for r in summary["memorized_images"]} == {"shop_mask.png", "mug_mask.png"}


def test_without_its_mask_the_same_copy_is_only_a_portion(templates_scan):
    root, _, _ = templates_scan
    row = best(root, "plain-scan").loc["shop_copy"]
    assert row["copy_kind"] == "portion" and row["template_mask"] == "" and np.isnan(row["template_mse"])


def test_guard_and_report_say_which_published_template(templates_scan):
    root, _, _ = templates_scan
    code, out, err = run("guard", root / "gens" / "shop_copy.png", "--index", root / "index")
    assert code == 1, err
    assert "copy of the published template (mask shop_mask.png;" in out and "https://shop.example/a.jpg" in out
    code, out, _ = run("guard", root / "gens" / "unrelated.png", "--index", root / "index")
    assert code == 0 and out.startswith("no substantial replication")
    code, _, err = run("report", root / "scan")
    assert code == 0, err
    page = (root / "scan" / "report.html").read_text()
    assert "published template&#x27;s fixed region (its mask mug_mask.png)" in page
