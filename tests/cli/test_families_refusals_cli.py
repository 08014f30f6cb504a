"""What a family cannot do yet, or a pipeline the registry does not know, is one `error:` line (exit 2) before the
model loads, never exit 70; what it can do runs: a pipeline class outside the registry through generate, scan and
cliques (drawn by its own __call__), an SD3 sweep on Ray Data."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from helpers import expect_error, family_audit_config, run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from imgextract.demo.families import save_tiny_family
    root = tmp_path_factory.mktemp("refusal-families")
    dirs = {f: save_tiny_family(f, root / f) for f in ("sd1", "sd3", "pixart-sigma")}
    foreign = root / "foreign"                  # a real diffusers pipeline class the registry does not name
    shutil.copytree(dirs["sd1"], foreign)
    index = json.loads((foreign / "model_index.json").read_text())
    (foreign / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPAGPipeline"}))
    missing = root / "missing"                  # a class this diffusers does not have
    shutil.copytree(dirs["sd1"], missing)
    (missing / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusion9Pipeline"}))
    return {**dirs, "foreign": foreign, "missing": missing}


@pytest.fixture(scope="module")
def index(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("refusal-index")
    (root / "train").mkdir()
    for n in ("astronaut", "coffee"):
        photos[n].resize((64, 64)).save(root / "train" / f"{n}.png")
    code, _, err = run("index", "build", root / "train", "--name", root / "ix")
    assert code == 0, err
    return root / "ix"


def test_sd3_is_scored_by_every_method_and_reconstructed_and_refuses_a_wrong_sampler(tmp_path, models, photos):
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\n")
    code, _, err = run("triage", caps, "--model", models["sd3"], "--out", tmp_path / "ok.parquet", "--samples", "2",
                       "--methods", "wen,attn,guide,mid,edge")
    assert code == 0, err
    scored = pd.read_parquet(tmp_path / "ok.parquet")
    assert scored[["wen_score", "attn_score", "guide_score", "mid_score", "edge_score"]].notna().all().all()
    assert scored["score_space"].tolist() == ["velocity"]
    clean = tmp_path / "clean.txt"
    clean.write_text("a grey cat\n")
    code, _, err = run("triage-eval", "--memorized", caps, "--clean", clean, "--model", models["sd3"], "--samples", "1",
                       "--schedule-steps", "2", "--bootstrap", "100", "--out", tmp_path / "e.json",
                       "--methods", "wen,attn,guide,mid,edge")
    assert code == 0, err
    scores = {r["score"] for r in json.loads((tmp_path / "e.json").read_text())["scores"]}
    assert {"wen", "attn", "guide", "mid", "edge"} <= scores, scores
    works = tmp_path / "works"
    works.mkdir()
    photos["rocket"].resize((64, 64)).save(works / "rocket.png")
    null = tmp_path / "null"
    null.mkdir()
    photos["coffee"].resize((64, 64)).save(null / "coffee.png")
    code, out, err = run("check", works, "--model", models["sd3"], "--out", tmp_path / "chk", "--samples", "1",
                         "--reconstruct", "--null", null, "--reconstruct-steps", "3")
    assert code == 0, err
    found = json.loads((tmp_path / "chk" / "check.json").read_text())
    search = found["works"][0]["reconstruction"]
    assert search["search_steps"] == 3 and found["null_calibration"]["images"] == 1
    assert len(search["sample_paths"]) == search["samples"] == 8
    from PIL import Image
    assert all(Image.open(p).size == (32, 32) for p in search["sample_paths"])   # SD3's native size here
    code, _, err = run("generate", caps, "--model", models["sd3"], "--out", tmp_path / "r", "--scheduler", "ddim")
    expect_error(code, err, "scheduler 'ddim' does not fit Stable Diffusion 3", "flow-euler")
    assert not (tmp_path / "r").exists()


def test_a_pipeline_outside_the_registry_draws_but_is_not_scored(tmp_path, models, index):
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\n")
    code, _, err = run("generate", caps, "--model", models["foreign"], "--out", tmp_path / "r", "--samples", "2",
                       "--steps", "2")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "run.json").read_text())["family"] == "unregistered"
    assert run("scan", tmp_path / "r", "--index", index)[0] == 0
    assert run("cliques", tmp_path / "r", "--min-size", "2")[0] == 0
    code, _, err = run("triage", caps, "--model", models["foreign"], "--out", tmp_path / "t.parquet", "--methods", "wen")
    expect_error(code, err, "registered model family", "StableDiffusionPAGPipeline")
    assert "generate, scan and cliques still work" in err and not (tmp_path / "t.parquet").exists()
    code, _, err = run("generate", caps, "--model", models["missing"], "--out", tmp_path / "m")
    expect_error(code, err, "StableDiffusion9Pipeline", "diffusers", "upgrade diffusers")
    assert not (tmp_path / "m").exists()


def test_a_flow_transformer_sweeps_on_ray_as_the_local_engine_draws_and_compares_with_another_family(tmp_path, models, index):
    """An SD3 audit file on Ray Data: the draw workers load the family from run.json and draw the bytes the local
    engine's per-shard callable draws in this process."""
    pytest.importorskip("ray")
    from imgextract.stages.generate import ShardDrawer
    code, _, err = run("run", family_audit_config(tmp_path, models["sd3"], index, engine="ray"), timeout=600)
    assert code == 0, err
    out = tmp_path / "run"
    assert json.loads((out / "run.json").read_text())["family"] == "sd3" and (out / "report.html").is_file()
    manifest = pd.read_parquet(out / "samples" / "shard-00000.parquet")
    local = {d.rel: d.sha256 for d in ShardDrawer(out)(0).drawn}
    assert len(manifest) == 2 and dict(zip(manifest["file"], manifest["sha256"])) == local

    # a researcher compares two families audited on the same captions
    (tmp_path / "pixart").mkdir()
    code, _, err = run("run", family_audit_config(tmp_path / "pixart", models["pixart-sigma"], index))
    assert code == 0, err
    code, _, err = run("compare", out, tmp_path / "pixart" / "run", "--out", tmp_path / "cmp", "--resamples", "200")
    assert code == 0, err
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert compared["captions_compared"] == 1
    for row, folder in zip(compared["runs"], (out, tmp_path / "pixart" / "run")):
        assert row["model"] == str(models["sd3"] if folder == out else models["pixart-sigma"])
        matches = pd.read_parquet(folder / "matches.parquet")
        assert row["extracted"] == matches.loc[matches["memorized"], "caption_id"].nunique()
