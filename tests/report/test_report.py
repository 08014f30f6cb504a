"""The report as evidence: one entry per memorized training image, side by side with a tile map,
legal terms, an executive summary; it scales to 10^4 findings and is checked in a real browser."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image

import browser

XSS = ['<script>window.__xss=1</script> a cat', '<img src=x onerror="window.__xss=1"> a dog', "it's \"quoted\" & <b>bold"]


def synthetic_run(root: Path, photos: dict, n_train: int, per_image: int, extra_captions: int = 0) -> Path:
    """A scan output with n_train memorized training images, each reproduced by per_image generations:
    real photographs (64 px) behind symlinked file names; the match rows carry set distances (the page, not
    the scan, is under test), and the summary is computed by scan.summarize."""
    from imgextract import rundir
    from imgextract.stages.scan import MATCH_COLUMNS, ScanParams, summarize
    src = root / "photos"
    src.mkdir(parents=True)
    names = sorted(photos)
    for n in names:
        photos[n].resize((64, 64)).save(src / f"{n}.png")
    train_dir, gen_dir = root / "train", root / "gens"
    train_dir.mkdir(), gen_dir.mkdir()
    rows = []
    for t in range(n_train):
        photo = names[t % len(names)]
        (train_dir / f"t{t:05d}.png").symlink_to(src / f"{photo}.png")
        for g in range(per_image):
            gen = gen_dir / f"g{t:05d}_{g:03d}.png"
            gen.symlink_to(src / f"{photo}.png")
            cap = XSS[t % len(XSS)] if t < 3 else f"caption {t}"
            rows.append({"generation_path": str(gen), "caption_id": f"c{t:05d}", "caption": cap, "sample_index": g,
                         "seed": 1000 * t + g, "train_id": t, "train_path": str(train_dir / f"t{t:05d}.png"),
                         "train_caption": cap, "rank": 0, "similarity": 1.0, "tiled_l2": 0.01 + 0.001 * g,
                         "l2": 0.005, "phash_distance": 0, "dhash_distance": 0, "whash_distance": 0,
                         "relative_l2": np.nan, "memorized": True})
    for c in range(extra_captions):  # captions with nothing memorized
        photo = names[c % len(names)]
        gen = gen_dir / f"x{c:05d}.png"
        gen.symlink_to(src / f"{photo}.png")
        rows.append({**rows[0], "generation_path": str(gen), "caption_id": f"x{c:05d}", "caption": f"clean {c}",
                     "tiled_l2": 0.4, "memorized": False, "train_id": 0})
    matches = pd.DataFrame(rows, columns=MATCH_COLUMNS)
    out = root / "scan"
    out.mkdir()
    rundir.write_parquet_atomic(out / rundir.MATCHES, matches)
    params = ScanParams(index="synthetic")
    index = SimpleNamespace(path=root / "index", embedder={"spec": "pixel"})
    summary = summarize(matches, matches["generation_path"].nunique(), [], params, index)
    rundir.write_json_atomic(out / rundir.SUMMARY, summary)
    return out


def test_one_entry_per_training_image_with_tile_map(tmp_path, photos):
    from imgextract.report.report import render_report
    out = synthetic_run(tmp_path, photos, n_train=5, per_image=4)
    page = render_report(out).read_text()
    entries = re.findall(r"data-train-id='(\d+)'", page)
    assert sorted(map(int, entries)) == [0, 1, 2, 3, 4]          # 5 entries, not 20 generation cards
    assert page.count("alt='tile distances'") == 5
    assert page.count("memorized, extracted") + page.count("memorized, regurgitated") == 5
    assert "Executive summary" in page and "Not tested." in page and "captions with a memorized sample" in page
    assert "window.__xss=1</script>" not in page and "&lt;script&gt;window.__xss=1" in page
    assert "onerror=\"window" not in page
    assert "data:image/png;base64," in page and "report_files/" not in page   # small: one self-contained file


def test_tile_map_values_are_the_tiles_rms(photos, tmp_path):
    from imgextract import distance
    from imgextract.report.report import tile_map
    a = photos["astronaut"].resize((64, 64))
    b = np.asarray(a).copy()
    b[:16, :16] = 255 - b[:16, :16]                                  # one tile replaced
    a.save(tmp_path / "a.png"), Image.fromarray(b).save(tmp_path / "b.png")
    m = tile_map(str(tmp_path / "b.png"), str(tmp_path / "a.png"), 4, 0.15)
    assert m.size == (256, 256)
    diff = distance.to_array(Image.fromarray(b)) - distance.to_array(a)
    rms = np.sqrt(distance.tile_mse(diff ** 2, 4))
    assert rms[0, 0] > 0.15 and rms[1:, 1:].max() == 0
    corner = np.asarray(m)[2:60, 2:60].reshape(-1, 3)                # the bad tile's label is drawn red
    assert ((corner[:, 0] > 200) & (corner[:, 1] < 120)).any()


@browser.required
def test_ten_thousand_findings_in_a_browser(tmp_path, photos):
    from playwright.sync_api import sync_playwright

    from imgextract.report.report import MAX_ENTRIES, render_report
    out = synthetic_run(tmp_path, photos, n_train=500, per_image=20, extra_captions=200)  # 10,000 findings
    t0 = time.perf_counter()
    path = render_report(out)
    render_s = time.perf_counter() - t0
    size = path.stat().st_size + sum(f.stat().st_size for f in (out / "report_files").iterdir())
    assert size < 50e6
    html = path.read_text()
    assert len(re.findall(r"data-train-id=", html)) == MAX_ENTRIES and "report_files/" in html
    with sync_playwright() as p:
        b = browser.open_browser(p)
        try:
            check = browser.PageCheck(b, path)
            assert check.load_seconds < 10, check.load_seconds
            check.screenshot("report-10k-first-screen.png")
            n, bad = check.all_images_decode()
            assert not bad and n >= MAX_ENTRIES * 3
            assert not check.errors, check.errors
            pg = check.page
            assert pg.evaluate("window.__xss") is None
            assert pg.evaluate("document.querySelectorAll('[data-train-id] h3 script, td script').length") == 0
            assert pg.locator("text=<script>window.__xss=1</script> a cat").count() >= 1   # shown as text
            # the pair sits side by side: same top, training image left of the generation
            boxes = pg.evaluate("Array.from(document.querySelector('[data-train-id] .pair').children)"
                                ".map(f => f.getBoundingClientRect()).map(r => [r.x, r.y, r.width])")
            assert len(boxes) == 3 and boxes[0][1] == boxes[1][1] == boxes[2][1] and boxes[0][0] < boxes[1][0]
            assert boxes[0][2] == boxes[1][2]                                             # at the same size
            # sort the per-caption table by rate (ascending, then descending) and filter it
            rates = "Array.from(document.querySelectorAll('#per-caption tbody tr')).map(r => r.cells[4].textContent)"
            pg.click("#per-caption th:nth-child(5)")
            asc = pg.evaluate(rates)
            assert asc == sorted(asc, key=float) and float(asc[0]) == 0.0
            pg.click("#per-caption th:nth-child(5)")
            assert pg.evaluate(rates)[0] == "1.00"
            pg.fill("input.filter", "clean 17")
            visible = pg.evaluate("Array.from(document.querySelectorAll('#per-caption tbody tr'))"
                                  ".filter(r => r.style.display !== 'none').map(r => r.cells[1].textContent)")
            assert sorted(visible) == ["clean 17", "clean 170", "clean 171", "clean 172", "clean 173", "clean 174",
                                       "clean 175", "clean 176", "clean 177", "clean 178", "clean 179"]
        finally:
            b.close()
    print(f"\n10,000 findings: report {size / 1e6:.1f} MB (page + thumbnails), rendered in {render_s:.1f} s, "
          f"loaded in {check.load_seconds:.2f} s")


@browser.required
def test_small_report_is_self_contained_in_a_browser(tmp_path, photos):
    from imgextract.report.report import render_report
    out = synthetic_run(tmp_path, photos, n_train=4, per_image=3)
    path = render_report(out)
    check = browser.check_page(path, screenshot="report-small-first-screen.png")
    assert check.images >= 4 * 3
