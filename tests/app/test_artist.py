"""The artist's check: can this model reproduce my works? One verdict per work, judged on its own prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from PIL import Image

import browser


def test_check_reproduced_and_not_reproduced(tmp_path, memorizing_model):
    from imgextract.app.artist import run_check
    model, cfg = memorizing_model
    from imgextract.demo.toy import training_set
    items, held = training_set(cfg)
    works = tmp_path / "works"
    works.mkdir()
    Image.open(model / "train" / "astronaut.png").save(works / "astronaut.png")   # 60 copies in training
    held[0].image.save(works / f"{held[0].name}.png")                             # never seen
    (works / "astronaut.txt").write_text(items[0].caption)
    said = []
    result, page = run_check(works, str(model), tmp_path / "check", samples=8, steps=25, guidance=3.0,
                             device="cpu", say=said.append)
    by = {v.work.rsplit("/", 1)[1]: v for v in result}
    assert by["astronaut.png"].verdict == "reproduced" and by["astronaut.png"].best_tiled_l2 < 0.15
    unseen = by[f"{held[0].name}.png"]
    assert unseen.verdict == "not reproduced in 8 samples", unseen
    assert unseen.prompt_source == "file name" and unseen.prompt == held[0].name.replace("-", " ")
    assert "does not show the model has not memorized it" in unseen.sentence()
    assert any("file name" in s for s in said)
    html = page.read_text()
    assert "reproduced" in html and "imgextract sample --model" in html and html.count("<figure") >= 4


def test_check_cards_show_their_own_prompts_samples(tmp_path, memorizing_model):
    """Three works with known captions, in a table kept *outside* the works folder (matched by file
    name): the memorized one is reproduced, and every sample on a card was drawn from its own prompt."""
    import re
    import subprocess
    import sys
    from imgextract.demo.toy import training_set
    model, cfg = memorizing_model
    items, held = training_set(cfg)
    works = tmp_path / "works"
    works.mkdir()
    Image.open(model / "train" / "astronaut.png").save(works / "astronaut.png")
    rows = [("astronaut.png", items[0].caption)]
    for h in held[:2]:
        h.image.save(works / f"{h.name}.png")
        rows.append((f"{h.name}.png", h.caption))
    table = tmp_path / "works-captions.csv"
    pd.DataFrame(rows, columns=["file", "caption"]).to_csv(table, index=False)
    exe = Path(sys.executable).parent / "imgextract"
    p = subprocess.run([str(exe), "check", str(works), "--model", str(model), "--captions", str(table),
                        "--samples", "6", "--steps", "25", "--guidance", "3", "--device", "cpu",
                        "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert f"captions file {table}: 3 of 3 work(s) matched" in p.stderr
    report = json.loads((tmp_path / "c" / "check.json").read_text())
    by = {Path(w["work"]).name: w for w in report["works"]}
    assert by["astronaut.png"]["verdict"] == "reproduced" and by["astronaut.png"]["best_tiled_l2"] < 0.15
    assert by["astronaut.png"]["prompt"] == items[0].caption and by["astronaut.png"]["prompt_source"] == "captions file"
    for h in held[:2]:
        assert by[f"{h.name}.png"]["verdict"] == "not reproduced" and by[f"{h.name}.png"]["samples_drawn"] == 6
    samples = pd.concat([pd.read_parquet(f) for f in (tmp_path / "c" / "run" / "samples").glob("shard-*.parquet")])
    seeds_of = samples.groupby("caption_id")["seed"].apply(set).to_dict()
    page = (tmp_path / "c" / "check.html").read_text()
    cards = re.findall(r"data-work-id='(w\d+)'(.*?)(?=data-work-id=|</body>)", page, re.S)
    assert len(cards) == 3
    shown = 0
    for wid, body in cards:
        for cid, seed in re.findall(r"data-caption-id='(w\d+)' data-seed='(\d+)'", body):
            assert cid == wid and int(seed) in seeds_of[wid]
            shown += 1
    assert shown == 12  # 4 closest samples per card
    browser.check_page_if_available(tmp_path / "c" / "check.html", "check-first-screen.png")


def test_check_refuses_a_captions_table_that_matches_no_work(tmp_path, tiny_pipeline_dir, photos):
    import subprocess
    import sys
    works = tmp_path / "works"
    works.mkdir()
    photos["chelsea"].resize((32, 32)).save(works / "cat.png")
    table = tmp_path / "captions.csv"
    table.write_text("file,caption\nsomething-else.png,a dog\n")
    exe = Path(sys.executable).parent / "imgextract"
    p = subprocess.run([str(exe), "check", str(works), "--model", str(tiny_pipeline_dir), "--captions", str(table),
                        "--out", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith(f"error: captions file {table} names none of the 1 work(s)")
    assert not (tmp_path / "c").exists()
