"""The artist's check: can this model reproduce my works? One verdict per work, judged on its own prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from PIL import Image

import browser
from helpers import reference_copies


def test_check_reproduced_and_not_reproduced(tmp_path, memorizing_model):
    from imgextract.app.artist import run_check
    from imgextract.app.settings import CheckSettings, SamplingConfig
    model, cfg = memorizing_model
    from imgextract.demo.toy import training_set
    items, held = training_set(cfg)
    works = tmp_path / "works"
    works.mkdir()
    Image.open(model / "train" / "astronaut.png").save(works / "astronaut.png")   # 60 copies in training
    held[0].image.save(works / f"{held[0].name}.png")                             # never seen
    (works / "astronaut.txt").write_text(items[0].caption)
    said = []
    result, page = run_check(works, str(model), tmp_path / "check", CheckSettings(samples=8),
                             SamplingConfig(steps=25, guidance=3.0, device="cpu"), say=said.append)
    by = {v.work.rsplit("/", 1)[1]: v for v in result}
    assert by["astronaut.png"].verdict == "reproduced" and by["astronaut.png"].best_tiled_l2 < 0.15
    unseen = by[f"{held[0].name}.png"]
    assert unseen.verdict == "not reproduced in 8 samples", unseen
    assert unseen.prompt_source == "file name" and unseen.prompt == held[0].name.replace("-", " ")
    assert "does not show the model has not memorized it" in unseen.sentence()
    assert any("file name" in s for s in said)
    html = page.read_text()
    assert "reproduced" in html and "imgextract sample --run" in html and html.count("<figure") >= 4


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
        for cid, seed in re.findall(r"data-caption-id='(w[\d-]+t?\d*)' data-seed='(\d+)'", body):
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


def test_check_with_the_training_index_finds_each_works_copies_and_samples_their_captions(tmp_path, memorizing_model):
    """The issue's acceptance: three works (memorized; in training but seen once; never trained on), the
    artist knowing no caption. The training index is a LAION-like table (URL, licence, caption) of the
    toy's training images plus a re-upload of the memorized one under a second caption."""
    import subprocess
    import sys
    from imgextract.app.commands import build_index
    from imgextract.demo.photos import faces
    from imgextract.demo.toy import training_set
    model, cfg = memorizing_model
    items, held = training_set(cfg)
    rows = [(str(model / "train" / f"{it.name}.png"), it.caption, f"https://example.org/{it.name}.jpg",
             f"CC-BY {it.name}") for it in items]
    reupload = tmp_path / "reupload.jpg"
    Image.open(model / "train" / "astronaut.png").save(reupload, quality=95)
    rows.append((str(reupload), "astronaut wallpaper <b>HD</b>", "javascript:alert(1)", None))
    pd.DataFrame(rows, columns=["path", "caption", "url", "LICENSE"]).to_csv(tmp_path / "laion.csv", index=False)
    build_index(tmp_path / "laion.csv", str(tmp_path / "laion-index"), "pixel", progress=False)
    works = tmp_path / "works"
    works.mkdir()
    Image.open(model / "train" / "astronaut.png").save(works / "a-my-painting.png")        # 60 copies in training
    Image.open(model / "train" / f"{items[1].name}.png").save(works / "b-my-sketch.png")   # once
    held[0].image.save(works / "c-my-study.png")                                          # never
    null = tmp_path / "null"
    null.mkdir()
    for name, im in faces(2, cfg.size):
        im.save(null / f"{name}.png")
    exe = Path(sys.executable).parent / "imgextract"
    p = subprocess.run([str(exe), "check", str(works), "--model", str(model), "--index", str(tmp_path / "laion-index"),
                        "--samples", "4", "--steps", "25", "--guidance", "3", "--device", "cpu",
                        "--reconstruct", "--null", str(null), "--reconstruct-steps", "30", "--out", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "c" / "check.json").read_text())
    a, b, c = sorted(report["works"], key=lambda w: w["work"])
    assert [a["in_training"], b["in_training"], c["in_training"]] == [True, True, False]
    assert c["training_copies"] == [] and "in the training set" not in c["terms"]
    # the memorized work: both its training copies, its captions sampled first, weighted, then the file name
    assert {t["caption"] for t in a["training_copies"]} == {items[0].caption, "astronaut wallpaper <b>HD</b>"}
    assert all(t["kind"] == "whole" for t in a["training_copies"])
    licensed = next(t for t in a["training_copies"] if t["caption"] == items[0].caption)
    assert licensed["license"] == "CC-BY astronaut" and licensed["url"] == "https://example.org/astronaut.jpg"
    assert [q["source"] for q in a["prompts"]] == ["training caption", "training caption", "file name"]
    assert [q["samples"] for q in a["prompts"]] == [4, 4, 4] and a["samples_drawn"] == 12
    assert a["verdict"] == "reproduced"
    # which prompt drew the best copy is the toy's doing: the verdict names one of the work's prompts, and its
    # legal term follows from that prompt's source
    by = a["reproduced_by"]
    assert {"caption_id": by["caption_id"], "prompt": by["prompt"], "source": by["source"]} in \
        [{k: q[k] for k in ("caption_id", "prompt", "source")} for q in a["prompts"]]
    assert ("regurgitated" if by["source"] == "training caption" else "extracted") in a["terms"]
    assert [t["caption"] for t in b["training_copies"]] == [items[1].caption]
    assert b["prompts"][0] == {"caption_id": "w0001-t0", "prompt": items[1].caption, "source": "training caption",
                               "samples": 4, "training_copies": 1}
    assert c["prompts"] == [{"caption_id": "w0002", "prompt": "c my study", "source": "file name", "samples": 4,
                             "training_copies": 0}]
    # every sample records the caption that drew it, and the seed the verdict names is one of them
    samples = pd.concat([pd.read_parquet(f) for f in (tmp_path / "c" / "run" / "samples").glob("shard-*.parquet")])
    drawn = samples.groupby(["caption_id", "caption"]).size().to_dict()
    assert drawn == {(q["caption_id"], q["prompt"]): q["samples"] for w in (a, b, c) for q in w["prompts"]}
    drew = samples[(samples["caption_id"] == by["caption_id"]) & (samples["seed"] == by["seed"])]
    assert len(drew) == 1
    # and that sample is a copy of the work, judged here by brute force
    sample = tmp_path / "c" / "run" / drew["file"].iloc[0]
    assert reference_copies([sample], works)[str(sample)].get("a-my-painting.png") in ("whole", "portion")
    # reconstruction: searched for the works no prompt reproduced, with the null beside each result
    assert c["verdict"] == "not reproduced"                  # a work the model never saw is not "reproduced"
    searched = [w for w in (a, b, c) if w["verdict"] != "reproduced"]
    for w in (a, b, c):
        r = w["reconstruction"]
        if w not in searched:
            assert r is None
            continue
        assert r["null"]["images"] == 2 and r["search_steps"] == 30 and len(r["sample_paths"]) == 8
        assert ("reconstructable" in w["terms"]) == r["reconstructed"]
        assert r["meaning"]
    assert report["null_calibration"]["images"] == 2
    html = (tmp_path / "c" / "check.html").read_text()
    assert "astronaut wallpaper &lt;b&gt;HD&lt;/b&gt;" in html and "<b>HD</b>" not in html
    assert "href='javascript" not in html and "<code>javascript:alert(1)</code>" in html
    assert html.count("class='training'") == 3 and html.count("class='reproduced'") == 3 - len(searched)
    assert html.count("class='reconstruction'") == len(searched) and "In the training set: not found" in html
    browser.check_page_if_available(tmp_path / "c" / "check.html", "check-training-copies.png")
