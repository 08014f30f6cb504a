"""`imgextract membership` as an artist runs it: a small portfolio says how little it can show, and bad input is
one `error:` line (exit 2), before the model loads."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from helpers import expect_error, run


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory, member_model, never_seen):
    """Ten of the toy's training images plus one unreadable file; six photographs it never saw."""
    model, _ = member_model
    root = tmp_path_factory.mktemp("portfolio")
    works, refs = root / "works", root / "refs"
    works.mkdir(), refs.mkdir()
    for i, p in enumerate(sorted((model / "train").glob("*.png"))[:10]):
        shutil.copy(p, works / (p.name if i else "<b>x&y.png"))     # a hostile name reaches the page as text
    (works / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    for p in sorted(never_seen.glob("*.png"))[:6]:
        shutil.copy(p, refs / p.name)
    return model, works, refs


def test_ten_works_and_six_references_run_and_say_what_they_can_show(tmp_path, portfolio):
    model, works, refs = portfolio
    out = tmp_path / "membership.json"
    code, stdout, err = run("membership", works, "--reference", refs, "--model", model, "--out", out,
                            "--null-splits", "3", "--device", "cpu")
    assert code == 0, err
    assert "skipped WORKS image" in err and "broken.png" in err
    result = json.loads(out.read_text())
    t = result["test"]
    assert (result["works"], result["references"]) == (10, 6)
    assert (t["fit_works"], t["fit_refs"], t["test_works"], t["test_refs"]) == (5, 3, 5, 3)
    assert t["exact"] and t["min_p"] == pytest.approx(1 / math.comb(8, 3)) and t["p_value"] >= t["min_p"]
    # 1/56 > 0.01: the command says this set cannot reach the bar, whatever its scores
    assert result["verdict"].startswith("No conclusion: with 5 held-out works this test cannot show p below 0.01")
    assert result["verdict"].split(";")[0] in stdout
    assert [s["path"].endswith("broken.png") for s in result["skipped"]] == [True]
    assert len(result["seeds"]["noise_seeds"]) == result["settings"]["noises"] == 4
    assert len(result["null"]["p_values"]) == 3 and "null: " in stdout
    assert len(result["images"]) == 16 and all(len(r["features"]) == len(result["features"]) for r in result["images"])
    page = out.with_suffix(".html").read_text()
    assert "No conclusion" in page and "&lt;b&gt;x&amp;y.png" in page and "<b>x&y" not in page
    # a second run may replace what the command wrote itself, and nothing else; with a caption beside every image,
    # works and references alike, each is scored under its caption
    captioned = {}
    for side in (works, refs):
        captioned[side] = shutil.copytree(side, tmp_path / f"captioned-{side.name}")
        for png in captioned[side].glob("*.png"):
            png.with_suffix(".txt").write_text(f"a photograph of {png.stem}")
    code, _, err = run("membership", captioned[works], "--reference", captioned[refs], "--model", model, "--out", out,
                       "--fit-share", "0", "--device", "cpu")
    assert code == 0, err
    second = json.loads(out.read_text())
    prior = second["test"]
    assert (prior["test_works"], prior["test_refs"]) == (10, 6) and prior["min_p"] == pytest.approx(1 / math.comb(16, 6))
    assert second["conditioning"] == "each image's caption" and result["conditioning"].startswith("the unconditional")
    assert second["images"][0]["features"] != result["images"][0]["features"]   # the caption changed the losses


def test_bad_input_is_refused_before_the_model_loads(tmp_path, portfolio):
    model, works, refs = portfolio
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(works.glob("*.png"))[:9]:
        shutil.copy(p, few / p.name)
    nowhere = tmp_path / "no-model"     # the inputs are refused first: the model is never reached
    code, _, err = run("membership", few, "--reference", refs, "--model", nowhere, "--out", tmp_path / "m.json")
    expect_error(code, err, "WORKS", "at least 10")
    small = tmp_path / "small-refs"
    shutil.copytree(refs, small)
    next(small.glob("*.png")).unlink()
    code, _, err = run("membership", works, "--reference", small, "--model", nowhere, "--out", tmp_path / "m.json")
    expect_error(code, err, "--reference", "at least 6")
    both = tmp_path / "both"
    shutil.copytree(refs, both)
    shutil.copy(next(works.glob("*.png")), both / "mine.png")
    code, _, err = run("membership", works, "--reference", both, "--model", nowhere, "--out", tmp_path / "m.json")
    expect_error(code, err, "both works and references")
    foreign_out = tmp_path / "notes.json"
    foreign_out.write_text('{"mine": true}')
    code, _, err = run("membership", works, "--reference", refs, "--model", model, "--out", foreign_out)
    expect_error(code, err, "was not written by imgextract membership")
    assert foreign_out.read_text() == '{"mine": true}'
    code, _, err = run("membership", works, "--reference", refs, "--model", model, "--out", tmp_path / "m.txt")
    expect_error(code, err, "not a .json file")
    code, _, err = run("membership", works, "--reference", refs, "--model", model, "--out", tmp_path / "m.json",
                       "--fit-share", "1")
    expect_error(code, err, "--fit-share")
    foreign = tmp_path / "foreign"                 # a pipeline class the registry does not name
    shutil.copytree(model, foreign, ignore=shutil.ignore_patterns("train"))
    index = json.loads((foreign / "model_index.json").read_text())
    (foreign / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPAGPipeline"}))
    code, _, err = run("membership", works, "--reference", refs, "--model", foreign, "--out", tmp_path / "m.json")
    expect_error(code, err, "membership needs a registered model family")
    assert not (tmp_path / "m.json").exists()
