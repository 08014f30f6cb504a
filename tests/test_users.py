"""The three ways in: the artist's check, the researcher's comparison, the release guard."""

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import browser
from imgextract.errors import InputError


def _audit(model_dir, out, index_name, samples=4):
    """index → generate → scan of a toy model's own training captions, as an auditor would."""
    from imgextract.engine import run_generation, run_scan
    from imgextract.generate import SamplingConfig
    from imgextract.index import build_index
    idx = build_index(model_dir / "train", str(out.parent / index_name), progress=False)
    cfg = SamplingConfig(samples=samples, steps=25, guidance=3.0, device="cpu", batch_size=8)
    run_generation(model_dir / "train" / "copies.csv", str(model_dir), out, cfg)
    run_scan(out, str(idx.path), out, k=3, threshold=0.15, grid=4, relative_n=0)
    return out


def test_check_reproduced_and_not_reproduced(tmp_path, memorizing_model):
    from imgextract.check import run_check
    model, cfg = memorizing_model
    from imgextract.toy import training_set
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


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, memorizing_model, plain_model):
    root = tmp_path_factory.mktemp("compare")
    a = _audit(memorizing_model[0], root / "dup60", "idx-dup")
    b = _audit(plain_model[0], root / "plain", "idx-plain")
    return a, b


def test_compare_shows_the_difference(tmp_path, two_runs):
    from imgextract.compare import compare_runs
    a, b = two_runs
    result = compare_runs([a, b], tmp_path / "cmp", n_boot=500)
    runs = {r["run"]: r for r in result["runs"]}
    for run in (a, b):  # the numbers are the runs' own matches
        m = pd.read_parquet(run / "matches.parquet")
        extracted = m.groupby("caption")["memorized"].any()
        assert runs[run.name]["extracted"] == int(extracted.sum())
        assert runs[run.name]["rate"] == pytest.approx(extracted.mean())
        assert runs[run.name]["ci_low"] <= runs[run.name]["rate"] <= runs[run.name]["ci_high"]
    assert runs["dup60"]["rate"] > runs["plain"]["rate"]
    levels = {(r["run"], r["copies"]): r for r in result["per_duplication_level"]}
    assert levels[("dup60", 60)]["extracted"] == 1 and levels[("plain", 1)]["captions"] == 6
    dup_findings = [f for f in result["findings"] if "dup60" in f["runs"]]
    assert any(f["image"].endswith("astronaut.png") for f in dup_findings)
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count("<tr>") >= 3 and ("all runs" in page or "this run only" in page)
    assert "1 image: no interval" in page  # the 60x level holds one image
    if browser.available():
        assert browser.check_page(tmp_path / "cmp" / "compare.html", "compare-first-screen.png").images >= 2


def test_compare_refuses_other_captions_unless_intersection(tmp_path, two_runs):
    from imgextract.compare import compare_runs
    a, b = two_runs
    other = tmp_path / "other"
    import shutil
    shutil.copytree(b, other)
    caps = pd.read_parquet(other / "captions.parquet")
    caps.loc[0, "caption"] = "a caption nobody else used"
    caps.to_parquet(other / "captions.parquet")
    with pytest.raises(InputError, match="different caption sets"):
        compare_runs([a, other], tmp_path / "c1")
    result = compare_runs([a, other], tmp_path / "c2", intersection=True, n_boot=100)
    assert result["captions_compared"] == 5


def test_guard_names_the_replicated_image_and_its_licence(tmp_path, train_dir, photos):
    from imgextract.guard import Guard
    from imgextract.index import build_index
    listing = tmp_path / "train.csv"
    rows = ["path,caption,url,license"] + [f"{p},photo {p.stem},https://example.org/{p.stem},CC-BY-4.0"
                                           for p in sorted(train_dir.glob("*.png"))]
    listing.write_text("\n".join(rows))
    idx = build_index(listing, str(tmp_path / "idx"), progress=False)
    g = Guard(str(idx.path))
    copy = Image.open(train_dir / "rocket.png").convert("RGB").resize((96, 96))
    v = g.check(copy)
    assert v.memorized and v.term == "memorized (regurgitated)" and v.train_path.endswith("rocket.png")
    assert v.source == "https://example.org/rocket" and v.license == "CC-BY-4.0"
    assert g.check(copy, "targeted").term == "memorized (extracted)"
    new = g.check(photos["flower"].resize((128, 128)))
    assert not new.memorized and "no substantial replication" in new.sentence()


def test_check_cards_show_their_own_prompts_samples(tmp_path, memorizing_model):
    """Three works with known captions, in a table kept *outside* the works folder (matched by file
    name): the memorized one is reproduced, and every sample on a card was drawn from its own prompt."""
    import re
    import subprocess
    import sys
    from imgextract.toy import training_set
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
    if browser.available():
        browser.check_page(tmp_path / "c" / "check.html", "check-first-screen.png")


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
