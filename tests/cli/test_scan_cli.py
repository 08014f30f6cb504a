"""`imgextract scan`: odd images, folder resume by file, unfinished runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers import expect_error, first, run


def test_scan_grid_too_large(env, tmp_path):
    code, _, err = run("scan", env["train"], "--index", "train", "--grid", "100", "--out", tmp_path / "s",
                       env_extra=env["ix"])
    expect_error(code, err, "--grid 100")
    code, _, err = run("scan", env["train"], "--index", "train", "--exact-below", "0", "--out", tmp_path / "s",
                       env_extra=env["ix"])
    expect_error(code, err, "--exact-below 0")
    assert not (tmp_path / "s").exists()


def test_odd_images_through_index_scan_watermarks_and_report(env, tmp_path):
    from imgextract.sources.images import open_rgb
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, out, err = run("index", "build", env["odd"], "--name", "odd", env_extra=ix)
    assert code == 0, err
    skipped = {ln.split(" ")[3].split("/")[-1].rstrip(":") for ln in err.splitlines()
               if ln.startswith("skipped unreadable image")}
    expected = {"zero.png", "truncated.png", "truncated.jpg", "random.png", "text.png", "bomb.png", "loop.png"}
    assert expected <= skipped, err
    assert "900,000,000 pixels is over" in err
    loop_line = next(ln for ln in err.splitlines() if "loop.png" in ln)
    assert "symbolic links" in loop_line or "symlink loop" in loop_line, loop_line
    table = pd.read_parquet(tmp_path / "ix" / "odd" / "images.parquet")
    indexed = {Path(p).name for p in table["path"]}
    for name in ("cmyk.jpg", "grey16.png", "grey.png", "palette_alpha.png", "animated.gif", "rotated.jpg",
                 "with space.png", "ünïcødé.png", "quote'\"s.png", "<script>alert(1)<b>.png", "tiny.png"):
        assert name in indexed, name
    # 16-bit grey is scaled, not clipped: it equals the 8-bit photograph it was made from
    grey16 = np.asarray(open_rgb(env["odd"] / "grey16.png"))[..., 0].astype(int)
    grey8 = np.asarray(open_rgb(env["odd"] / "grey.png"))  # (other photo) just a sanity read
    assert grey8.shape == (64, 64, 3)
    assert (grey16 == 255).mean() < 0.05 and abs(grey16.mean() - 255 * 0.5) < 100

    scan_out = tmp_path / "scan"
    code, out, err = run("scan", env["odd"], "--index", "train", "--out", scan_out, env_extra=env["ix"])
    assert code == 0, err
    assert "tiny.png: 1x1 pixels is too small" in err and "bomb.png" in err and "loop.png" in err
    summary = json.loads((scan_out / "summary.json").read_text())
    assert summary["generations_scanned"] == len(indexed) - 1  # all but the 1×1
    code, out, err = run("report", scan_out)
    assert code == 0, err
    page = (scan_out / "report.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page

    code, out, err = run("watermarks", env["odd"], "--out", tmp_path / "wm")
    assert code == 0, err
    marks = pd.read_parquet(tmp_path / "wm" / "watermarks.parquet")
    errs = dict(zip(marks["path"].map(lambda p: Path(p).name), marks["error"]))
    assert errs["loop.png"] and errs["bomb.png"] and errs["zero.png"] and pd.isna(errs["cmyk.jpg"])


def test_folder_scan_resumes_by_file(env, tmp_path, monkeypatch, photos):
    from imgextract.progress import Step
    from imgextract.stages import scan as scan_mod
    from imgextract.stages.scan import plan as scan_plan
    from imgextract.index.store import open_index
    gens = tmp_path / "gens"
    gens.mkdir()
    for n in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.open(env["train"] / f"{n}.png").save(gens / f"{n}.jpg", quality=90)
    out = tmp_path / "out"
    # an interrupted scan: two files per shard, stopped after the first shard
    monkeypatch.setattr(scan_plan, "FOLDER_SHARD", 2)
    params = scan_mod.ScanParams(index=str(env["indexes"] / "train"), k=3, relative_n=0)
    steps = scan_mod.scan(gens, params, out, index=open_index(env["indexes"] / "train"))
    while next(steps) != Step("scan", 1, 2, "shard"):
        pass
    steps.close()
    monkeypatch.undo()
    (gens / "rocket.jpg").unlink()                                  # vanished
    for n in ("camera", "coins"):                                   # added
        Image.open(env["train"] / f"{n}.png").save(gens / f"{n}.jpg", quality=90)
    photos["flower"].resize((96, 96)).save(gens / "flower.png")
    code, out_text, err = run("scan", gens, "--index", "train", "-k", "3", "--relative-n", "0", "--out", out,
                              env_extra=env["ix"])
    assert code == 0, err
    assert first(err).startswith("resuming: 2 file(s) already scanned, 4 new, 0 changed (rescanned), 0 gone")
    m = pd.read_parquet(out / "matches.parquet")
    names = sorted({Path(p).name for p in m["generation_path"]})
    assert names == ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "coffee.jpg", "coins.jpg", "flower.png"]
    assert len(m) == 6 * 3 and m.groupby("generation_path").size().eq(3).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations_scanned"] == 6 and summary["memorized_generations"] == 5
    # a second run: nothing new; then a file changes and another goes
    Image.open(env["train"] / "rocket.png").save(gens / "coffee.jpg", quality=90)
    (gens / "flower.png").unlink()
    code, _, err = run("scan", gens, "--index", "train", "-k", "3", "--relative-n", "0", "--out", out,
                       env_extra=env["ix"])
    assert code == 0, err
    assert "5 file(s) already scanned" not in err and "1 changed (rescanned), 1 gone" in first(err)
    m = pd.read_parquet(out / "matches.parquet")
    assert len(m) == 5 * 3
    best = m[m["rank"] == 0].set_index(m[m["rank"] == 0]["generation_path"].map(lambda p: Path(p).name))
    assert best.loc["coffee.jpg", "train_path"].endswith("rocket.png")


def test_scan_of_an_unfinished_run_says_so(tmp_path, tiny_pipeline_dir, env):
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\na dog\n")
    run_dir = tmp_path / "run"
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", run_dir, "--samples", "2",
                       "--steps", "1", "--size", "32", "32", "--shard-size", "2")
    assert code == 0, err
    (run_dir / "samples" / "shard-00001.parquet").unlink()          # as if generate were still drawing it
    code, out, err = run("scan", run_dir, "--index", "train", "-k", "2", env_extra=env["ix"])
    assert code == 0, err
    assert "run" in first(err) and "is incomplete: 1 of 2 shards generated" in first(err)
    assert "incomplete run: 1 of 2 shards" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is False and summary["incomplete"] == {"shards_finished": 1, "shards_planned": 2}
    # 2 samples per caption can never make a clique of 10: said, not "0 of 2 flagged"
    code, _, err = run("cliques", run_dir, "--min-size", "10")
    expect_error(code, err, "2 samples per caption, fewer than --min-size 10", "no caption could be flagged")
