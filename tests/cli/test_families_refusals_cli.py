"""What a family cannot do yet, or a pipeline the registry does not know, is one `error:` line (exit 2) before the
model loads, never exit 70; what it can do runs: generate, scan and cliques one by one on a flow-matching
transformer, triage's default score, a pipeline class outside the registry drawn through its own __call__."""

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
    dirs = {f: save_tiny_family(f, root / f) for f in ("sd1", "sd3")}
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


def test_a_flow_transformer_runs_generate_scan_cliques_and_triage_one_by_one(tmp_path, models, index):
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\na cup of coffee\n")
    code, _, err = run("generate", caps, "--model", models["sd3"], "--out", tmp_path / "r", "--samples", "2")
    assert code == 0, err
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    assert record["family"] == "sd3" and record["sampling"]["steps"] == 28 and record["sampling"]["guidance"] == 7.0
    code, _, err = run("scan", tmp_path / "r", "--index", index)
    assert code == 0, err
    assert len(pd.read_parquet(tmp_path / "r" / "matches.parquet")) == 4 * 2
    code, _, err = run("cliques", tmp_path / "r", "--min-size", "2")
    assert code == 0, err
    code, _, err = run("triage", caps, "--model", models["sd3"], "--out", tmp_path / "t.parquet", "--samples", "2")
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "t.parquet")["edge_score"].between(0, 1).all()


def test_what_a_family_cannot_do_yet_is_refused_before_loading(tmp_path, models, photos):
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\n")
    code, _, err = run("triage", caps, "--model", models["sd3"], "--out", tmp_path / "t.parquet", "--methods", "wen")
    expect_error(code, err, "triage --methods wen", "Stable Diffusion 3", "--methods edge")
    code, _, err = run("triage-eval", "--memorized", caps, "--clean", caps, "--model", models["sd3"],
                       "--out", tmp_path / "e.json")
    expect_error(code, err, "triage-eval --methods wen,attn,guide", "--methods edge")
    works = tmp_path / "works"
    works.mkdir()
    photos["rocket"].resize((64, 64)).save(works / "rocket.png")
    code, _, err = run("check", works, "--model", models["sd3"], "--out", tmp_path / "chk", "--reconstruct",
                       "--null", works)
    expect_error(code, err, "check --reconstruct", "drop --reconstruct")
    code, _, err = run("generate", caps, "--model", models["sd3"], "--out", tmp_path / "r", "--scheduler", "ddim")
    expect_error(code, err, "scheduler 'ddim' does not fit Stable Diffusion 3", "flow-euler")
    assert not (tmp_path / "r").exists() and not (tmp_path / "chk").exists()


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


def test_a_flow_transformer_sweeps_on_ray_as_on_the_local_engine(tmp_path, models, index):
    """The same audit file on both engines: the Ray draw workers load the family from the run's record and draw
    the same bytes as the local engine."""
    pytest.importorskip("ray")
    manifests = {}
    for engine in ("local", "ray"):
        folder = tmp_path / engine
        folder.mkdir()
        code, _, err = run("run", family_audit_config(folder, models["sd3"], index, engine=engine), timeout=600)
        assert code == 0, err
        assert json.loads((folder / "run" / "run.json").read_text())["family"] == "sd3"
        manifests[engine] = pd.read_parquet(folder / "run" / "samples" / "shard-00000.parquet")
        assert (folder / "run" / "report.html").is_file()
    assert len(manifests["ray"]) == 4
    assert manifests["ray"]["sha256"].tolist() == manifests["local"]["sha256"].tolist()
