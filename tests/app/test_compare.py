"""The researcher's comparison of runs: rates with intervals, per duplication level, shared findings."""

from __future__ import annotations


import pandas as pd
import pytest

import browser
from imgextract.errors import InputError


def _audit(model_dir, out, index_name, samples=4):
    """index → generate → scan of a toy model's own training captions, as an auditor would."""
    from imgextract.app.commands import run_generation, run_scan
    from imgextract.stages.generate import SamplingConfig
    from imgextract.app.commands import build_index
    idx = build_index(model_dir / "train", str(out.parent / index_name), progress=False)
    cfg = SamplingConfig(samples=samples, steps=25, guidance=3.0, device="cpu", batch_size=8)
    run_generation(model_dir / "train" / "copies.csv", str(model_dir), out, cfg)
    run_scan(out, str(idx.path), out, k=3, threshold=0.15, grid=4, relative_n=0)
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, memorizing_model, plain_model):
    root = tmp_path_factory.mktemp("compare")
    a = _audit(memorizing_model[0], root / "dup60", "idx-dup")
    b = _audit(plain_model[0], root / "plain", "idx-plain")
    return a, b


def test_compare_shows_the_difference(tmp_path, two_runs):
    from imgextract.app.compare import compare_runs
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


@browser.required
def test_compare_page_in_a_browser(tmp_path, two_runs):
    from imgextract.app.compare import compare_runs
    compare_runs(list(two_runs), tmp_path / "cmp", n_boot=100)
    assert browser.check_page(tmp_path / "cmp" / "compare.html", "compare-first-screen.png").images >= 2


def test_compare_refuses_other_captions_unless_intersection(tmp_path, two_runs):
    from imgextract.app.compare import compare_runs
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
