"""Watermark detection with the real PP-OCRv4 models on real photographs with drawn marks."""

import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgextract.errors import InputError
from imgextract.demo.markdata import draw_mark, font_files
from imgextract.demo.markdata import photo
from imgextract.progress import drain
from imgextract.stages.watermarks import (Detector, WatermarkClassifier, build_classifier, compact, high_pass,
                                          load_brands, load_templates, match_brand, match_cut_brand, run_watermarks)


@pytest.fixture(scope="module")
def detector():
    return Detector()


def test_brand_matching_tolerates_garbling():
    brands = load_brands(None)
    assert match_brand("Getty lmages", brands)[0] == "Getty Images"
    assert match_brand("gettyimaqes", brands)[0] == "Getty Images"
    assert match_brand("SHUTTER STOCK", brands)[0] == "Shutterstock"
    assert match_brand("© 123RF.com", brands)[0] == "123RF"
    assert match_brand("iStock by Getty", brands) is not None
    for plain in ["Happy Birthday", "alarm clock", "Stockholm", "Summer Holiday", "dream time"[:5]]:
        assert match_brand(plain, brands) is None, plain
    assert compact("Getty Images") == compact("GETTY  lMAGES")
    assert match_brand("Drearnsfime", brands)[0] == "Dreamstime"  # "rn" reads as "m"
    assert match_brand("© iStock", brands)[0] == "iStock" and match_brand("lStoek", brands)[0] == "iStock"
    # short names are whole words: a word that merely contains or starts like one is not the brand
    for plain in ["Alameda Street", "Stock Market Stock Market", "In Stock", "Shutter Speed", "Sweet Dreams"]:
        assert match_brand(plain, brands) is None, plain


def test_a_mark_cut_by_the_frame_is_read_from_the_edge_it_reaches():
    brands = load_brands(None)
    assert match_cut_brand("Getty Im", brands, "right")[0] == "Getty Images"
    assert match_cut_brand("Adobe's", brands, "right")[0] == "Adobe Stock"   # "Adobe St", read by the OCR
    assert match_cut_brand("utterstock", brands, "left")[0] == "Shutterstock"
    assert match_cut_brand("Alam", brands, "right")[0] == "Alamy"
    assert match_cut_brand("Getty Im", brands, "left") is None   # the start of a name is not its end
    for plain in ["Dream", "Sweet Dreame", "Getty", "In Sto", "Photo Stu", "Alame", "Deposit"]:
        assert match_cut_brand(plain, brands, "right") is None, plain
    assert match_cut_brand("Stock Market", brands, "left") is None   # the end of "iStock", and a word of its own


@pytest.mark.parametrize("brand,seed", [("Getty Images", 3), ("Depositphotos", 2), ("Shutterstock", 3)])
def test_a_drawn_mark_the_frame_cuts_is_found_and_a_cut_plain_text_is_not(detector, brand, seed):
    rng = np.random.default_rng(zlib.crc32(brand.encode()))
    base = photo("retina", 512, rng)
    img = draw_mark(base, brand, "cut", np.random.default_rng(seed), font_files(), opacity=0.8)
    row = detector.detect(img)
    assert row["watermark"] and row["brand"] == brand, row["text"]
    assert compact(brand) not in compact(row["text"])                  # the whole name is not there to read
    assert row["box"][0] <= 15 or row["box"][2] >= 512 - 15           # it was read at the edge
    plain = draw_mark(base, "Photo Studio", "cut", np.random.default_rng(3), font_files(), opacity=0.8)
    assert not detector.detect(plain)["watermark"]


def test_the_high_pass_look_brings_out_a_mark_without_outline():
    """A mark 30% opaque with no outline on a smooth sky: a few grey levels in the photograph, tens in the look."""
    rng = np.random.default_rng(4)
    sky = Image.new("RGB", (256, 256), (150, 170, 200))
    arr = np.asarray(sky, np.float32) + np.linspace(0, 40, 256)[:, None, None]   # broad shading
    img = draw_mark(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), "Alamy", "faint", rng, font_files())
    diff = np.abs(np.asarray(img.convert("L"), np.float32) - np.asarray(Image.fromarray(
        np.clip(arr, 0, 255).astype(np.uint8)).convert("L"), np.float32))
    mark = diff > 2
    assert mark.sum() > 100 and diff[mark].mean() < 60
    look = np.asarray(high_pass(img).convert("L"), np.float32)
    background = np.abs(look[~mark] - 128)
    assert np.median(background) < 2          # the shading is gone
    assert np.abs(look[mark] - 128).mean() > 3 * max(1.0, float(np.median(background)))


def test_user_brands_file(tmp_path):
    f = tmp_path / "brands.txt"
    f.write_text("# extra\nPixabay: pixabay.com\n")
    brands = load_brands(f)
    assert match_brand("pixabav", brands)[0] == "Pixabay" and "Getty Images" in brands
    with pytest.raises(InputError, match="does not exist"):
        load_brands(tmp_path / "none.txt")


@pytest.mark.parametrize("brand,style", [("Getty Images", "single"), ("Shutterstock", "diagonal"),
                                         ("Alamy", "credit"), ("iStock", "single")])
def test_drawn_marks_are_found(detector, brand, style):
    # a fixed seed per case: hash() of a str changes with every interpreter (PYTHONHASHSEED)
    rng = np.random.default_rng(zlib.crc32(f"{brand}|{style}".encode()))
    img = draw_mark(photo("coffee", 512, rng), brand, style, rng, font_files(), opacity=0.7)
    row = detector.detect(img)
    assert row["watermark"] and row["brand"] == brand, row["text"]
    x0, y0, x1, y1 = row["box"]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512


@pytest.mark.parametrize("text", [None, "Happy Birthday", "Fresh Coffee"])
def test_clean_and_plain_text_images_are_not_flagged(detector, text):
    rng = np.random.default_rng(1)
    img = photo("chelsea", 512, rng)
    if text:
        img = draw_mark(img, text, "single", rng, font_files(), opacity=0.8)
    row = detector.detect(img)
    assert not row["watermark"], row
    if text:  # the OCR did read the text; it is just not a brand
        assert compact(text.split()[0]) in compact(row["text"])


def test_templates(tmp_path):
    rng = np.random.default_rng(3)
    logo = photo("coins", 64, rng).crop((0, 0, 64, 32))
    tdir = tmp_path / "templates"
    tdir.mkdir()
    logo.save(tdir / "coinlogo.png")
    img = photo("astronaut", 256, rng)
    img.paste(logo.resize((90, 45)), (120, 40))
    det = Detector(templates=load_templates(tdir))
    row = det.detect(img)
    assert row["watermark"] and row["template"] == "coinlogo" and row["template_score"] > 0.9
    x0, y0, _, _ = row["box"]
    assert abs(x0 - 120) <= 8 and abs(y0 - 40) <= 8
    assert not det.detect(photo("rocket", 256, rng))["watermark"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_templates(empty)


def test_classifier_loads_safely_and_rejects_bad_files(tmp_path):
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = build_classifier()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "wm.safetensors"))
    torch.save(model.state_dict(), tmp_path / "wm.pt")
    img = photo("rocket", 256, np.random.default_rng(0))
    a = WatermarkClassifier(tmp_path / "wm.safetensors")([img])
    b = WatermarkClassifier(tmp_path / "wm.pt")([img])
    assert a.shape == (1,) and 0 <= a[0] <= 1 and np.allclose(a, b, atol=1e-5)
    (tmp_path / "bad.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(InputError, match="cannot be loaded"):
        WatermarkClassifier(tmp_path / "bad.pt")
    with pytest.raises(InputError, match="does not exist"):
        WatermarkClassifier(tmp_path / "missing.pt")


def test_folder_run_writes_table(tmp_path, detector):
    rng = np.random.default_rng(5)
    d = tmp_path / "imgs"
    d.mkdir()
    draw_mark(photo("rocket", 384, rng), "Dreamstime", "single", rng, font_files(), opacity=0.8).save(d / "a.png")
    photo("flower", 384, rng).save(d / "b.png")
    (d / "c.png").write_bytes(b"broken")
    drain(run_watermarks(d, None, detector))
    out = pd.read_parquet(tmp_path / "imgs-watermarks" / "watermarks.parquet")
    assert len(out) == 3 and {"path", "watermark", "brand", "text", "box", "score"} <= set(out.columns)
    by_name = out.set_index(out["path"].str.rsplit("/", n=1).str[1])
    assert bool(by_name.loc["a.png", "watermark"]) and by_name.loc["a.png", "brand"] == "Dreamstime"
    assert not bool(by_name.loc["b.png", "watermark"]) and pd.isna(by_name.loc["b.png", "error"])
    assert pd.isna(by_name.loc["c.png", "watermark"]) and by_name.loc["c.png", "error"]


def test_reproduced_when_caption_and_its_training_image_carry_marks(tmp_path, detector):
    """A run's per-caption watermark rate, and 'reproduced' from the index's own watermark table."""
    import pyarrow as pa

    from imgextract import rundir
    from imgextract.stages.watermarks import watermark_summary
    rng = np.random.default_rng(7)
    train = tmp_path / "train.png"
    draw_mark(photo("coffee", 384, rng), "Getty Images", "single", rng, font_files(), opacity=0.8).save(train)
    run = tmp_path / "run"
    rows = []
    for i, marked in enumerate([True, False]):
        img = photo("rocket", 384, rng)
        if marked:
            img = draw_mark(img, "Getty Images", "credit", rng, font_files())
        rel = f"samples/shard-00000/c000000_s{i:05d}.png"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(run / rel)
        rows.append({"caption_id": "0", "caption": "coffee", "sample_index": i, "seed": i, "file": rel})
    rundir.write_parquet_atomic(run / "samples/shard-00000.parquet", pa.Table.from_pylist(rows))
    rundir.write_json_atomic(run / "run.json", {"imgextract_run": 1})
    rundir.write_parquet_atomic(run / "captions.parquet", pa.table({
        "caption_id": ["0"], "caption": ["coffee"], "train_path": [str(train)], "copies": pa.array([None], pa.int64())}))
    index = tmp_path / "index"
    index.mkdir()
    drain(run_watermarks(run, run, detector))
    rundir.write_parquet_atomic(index / "watermarks.parquet",
                                pd.DataFrame([{"path": str(train), **detector.detect(Image.open(train))}]))
    summary = watermark_summary(run, index)
    cap = summary["per_caption"][0]
    assert summary["watermarked"] == 1 and cap["rate"] == 0.5 and cap["brands"] == ["Getty Images"]
    assert cap["train_watermarked"] is True and cap["reproduced"] is True


def test_scan_carries_the_flag_and_box(tmp_path, detector, pixel_index, train_dir):
    """Watermarks checked first, then scan: each match row has the generation's flag and box."""
    from imgextract.stages.scan import ScanParams, scan
    rng = np.random.default_rng(11)
    gens = tmp_path / "gens"
    gens.mkdir()
    draw_mark(Image.open(train_dir / "coffee.png").convert("RGB").resize((384, 384)), "iStock", "credit", rng,
              font_files()).save(gens / "marked.png")
    photo("flower", 384, rng).save(gens / "clean.png")
    out = tmp_path / "out"
    drain(run_watermarks(gens, out, detector))
    list(scan(gens, ScanParams(index="train-pixel", k=2), out))
    m = pd.read_parquet(out / "matches.parquet").drop_duplicates("generation_path").set_index("generation_path")
    marked = m.loc[str((gens / "marked.png").resolve())]
    assert marked["watermark"] == True and marked["watermark_brand"] == "iStock"  # noqa: E712
    assert len(marked["watermark_box"]) == 4
    assert m.loc[str((gens / "clean.png").resolve()), "watermark"] == False  # noqa: E712
