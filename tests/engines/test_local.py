"""The sweep on the local engine, as users run it: `imgextract run audit.toml` in a subprocess; no Ray needed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import CAPTIONS, SAMPLES, expect_error, manifests, png_bytes, run, write_config


def test_local_keep_all_is_every_sample_once_and_resumes_to_nothing(all_run, evidence_run):
    m = manifests(all_run)
    assert len(m) == CAPTIONS * SAMPLES and m["kept"].all()
    for f, digest in zip(m["file"], m["sha256"]):
        assert hashlib.sha256((all_run / f).read_bytes()).hexdigest() == digest
    ev = manifests(evidence_run[2])
    assert m["sha256"].tolist() == ev["sha256"].tolist()   # keep decides what is written, not what is drawn


def test_keep_evidence_keeps_the_findings_and_far_fewer_bytes(evidence_run, all_run):
    folder, model, ev = evidence_run
    every = all_run
    m = manifests(ev)
    kept = m[m["kept"]]
    assert 0 < len(kept) < len(m)
    # every sample keeps its row, hashes, best match and embedding; only evidence keeps pixels
    assert m[["phash", "dhash", "whash", "best_train_id"]].notna().all().all()
    emb = [np.load(p) for p in sorted((ev / "samples").glob("shard-*.emb.npy"))]
    assert sum(len(e) for e in emb) == len(m) and np.isfinite(np.concatenate(emb)).all()
    on_disk = sorted(p.relative_to(ev).as_posix() for p in (ev / "samples").rglob("*.png"))
    assert on_disk == sorted(kept["file"])
    matches = pd.read_parquet(ev / "matches.parquet")
    best = matches.sort_values("tiled_l2").drop_duplicates("generation_path")
    evidence = set(best.loc[best["memorized"] | (best["tiled_l2"] < 0.15 + 0.05), "generation_path"])
    cliques = pd.read_parquet(ev / "cliques.parquet")
    for members in cliques.loc[cliques["flagged"], "members"]:
        evidence.update(members)
    assert {str((ev / f).resolve()) for f in kept["file"]} == evidence
    # the report's evidence renders: every memorized generation and clique member is on disk, every image has data
    assert all(Path(p).is_file() for p in evidence)
    html = (ev / "report.html").read_text()
    assert "Memorized training images" in html and "Cliques among generations" in html
    assert not re.search(r'<img [^>]*src=""', html) and html.count("<img") >= 3
    # the bytes of exactly the kept samples (the keep-all run drew the same ones): how many the toy copies, and
    # so the saving, is the toy's doing on this machine's float kernels
    all_png, ev_png = png_bytes(every), png_bytes(ev)
    print(f"PNG bytes: all {all_png}, evidence {ev_png} ({ev_png / all_png:.2f}); samples kept {len(kept)}/{len(m)}")
    assert ev_png == sum((every / f).stat().st_size for f in kept["file"]) < all_png
    # everything the sweep stores per sample (PNGs, manifests, embeddings): at 32 px a 768-d pixel
    # embedding weighs about what a PNG does, so the toy saves less here than a 512 px sweep does
    def stored_bytes(run_dir: Path) -> int:
        return sum(p.stat().st_size for p in (run_dir / "samples").rglob("*") if p.is_file())
    print(f"stored: all {stored_bytes(every)}, evidence {stored_bytes(ev)}")
    assert stored_bytes(ev) < stored_bytes(every)
    # resuming with the other mode is refused before any work
    code, _, err = run("run", write_config(folder, model, "evidence"), "--keep", "all", cwd=folder)
    expect_error(code, err, "other storage settings")


@pytest.mark.parametrize("extra,words", [
    ('kind = "spark"\n', ["kind = 'spark'", "local, ray"]),
    ('kind = "ray"\nworkers = 0\n', ["workers = 0", ">= 1"]),
    ('kind = "ray"\nnodes = 3\n', ["unknown [engine] keys", "nodes"]),
    ('kind = "local"\naddress = "auto"\n', ["Ray keys", 'kind = "ray"']),
])
def test_bad_engine_section_is_one_line_before_any_work(tmp_path, tiny_pipeline_dir, train_dir, extra, words):
    cfg = tmp_path / "a.toml"
    cfg.write_text(f"""
out = "r"
[index]
source = "{train_dir}"
name = "{tmp_path / 'idx'}"
[generate]
captions = "c.txt"
model = "{tiny_pipeline_dir}"
[engine]
{extra}""")
    (tmp_path / "c.txt").write_text("a cat\n")
    code, _, err = run("run", cfg, cwd=tmp_path)
    expect_error(code, err, *words)
    assert not (tmp_path / "r").exists() and not (tmp_path / "idx").exists()


def test_bad_keep_is_refused(tmp_path, tiny_pipeline_dir, train_dir):
    cfg = tmp_path / "a.toml"
    (tmp_path / "c.txt").write_text("a cat\n")
    cfg.write_text(f'out = "r"\n[index]\nsource = "{train_dir}"\nname = "{tmp_path / "idx"}"\n'
                   f'[generate]\ncaptions = "c.txt"\nmodel = "{tiny_pipeline_dir}"\n')
    code, _, err = run("run", cfg, "--keep", "some", cwd=tmp_path)
    expect_error(code, err, "--keep 'some'", "all, evidence")
    assert not (tmp_path / "r").exists()


def test_cliques_that_can_never_flag_and_a_missing_index_are_refused_before_any_work(tmp_path, tiny_pipeline_dir):
    (tmp_path / "c.txt").write_text("a cat\n")
    base = f'out = "r"\n[generate]\ncaptions = "c.txt"\nmodel = "{tiny_pipeline_dir}"\nsamples = 4\n'
    cfg = tmp_path / "a.toml"
    cfg.write_text(base + f'[index]\nname = "{tmp_path / "none"}"\n')
    code, _, err = run("run", cfg, cwd=tmp_path)
    expect_error(code, err, "not found", "imgextract index build")
    cfg.write_text(base + f'[index]\nsource = "{tmp_path}"\nname = "{tmp_path / "idx"}"\n[cliques]\nmin_size = 10\n')
    code, _, err = run("run", cfg, cwd=tmp_path)
    expect_error(code, err, "min_size = 10", "samples = 4")
    assert not (tmp_path / "r").exists() and not (tmp_path / "idx").exists()


def test_index_parts_in_processes_equal_the_threaded_build_and_survive_a_killed_process(served, tmp_path):
    """`index build --processes 2`: the parts built by spawned processes give the index a thread-pool
    build gives; a part process SIGKILLed after its first part leaves the unfinished parts to this process."""
    from helpers import img2dataset, kill_once
    shards = img2dataset(served, "webdataset")
    assert len(list(shards.glob("*.tar"))) >= 2
    env = {"IMGEXTRACT_INDEX_DIR": str(tmp_path)}
    code, _, err = run("index", "build", shards, "--name", "threads", "--processes", "1", env_extra=env)
    assert code == 0, err
    code, _, err = run("index", "build", shards, "--name", "procs", "--processes", "2", env_extra=env)
    assert code == 0 and "died" not in err, err
    with kill_once(lambda: bool(list((tmp_path / ".killed.tmp").glob("parts/*.done.json"))), "spawn_main") as killed:
        code, _, err = run("index", "build", shards, "--name", "killed", "--processes", "2",
                           env_extra={**env, "IMGEXTRACT_SLOW_PART": "1.5"}, timeout=600)
    assert code == 0, err
    assert killed and "a part process of index killed died" in err, err
    a = pd.read_parquet(tmp_path / "threads" / "images.parquet")
    for name in ("procs", "killed"):
        b = tmp_path / name
        assert len(a) >= 6 and a.equals(pd.read_parquet(b / "images.parquet"))
        for f in ("vectors.f16", "index.faiss"):
            assert (tmp_path / "threads" / f).read_bytes() == (b / f).read_bytes(), (name, f)
        for f in sorted((tmp_path / "threads" / "thumbs").iterdir()):
            assert f.read_bytes() == (b / "thumbs" / f.name).read_bytes()
    assert not (tmp_path / ".killed.tmp").exists()


def test_processes_are_refused_on_ray_and_below_one(tmp_path, train_dir):
    env = {"IMGEXTRACT_INDEX_DIR": str(tmp_path)}
    code, _, err = run("index", "build", train_dir, "--name", "x", "--processes", "-1", env_extra=env)
    expect_error(code, err, "--processes -1")
    code, _, err = run("index", "build", train_dir, "--name", "x", "--processes", "2", "--engine", "ray", env_extra=env)
    expect_error(code, err, "--processes is for the local engine")
    assert not list(tmp_path.iterdir())
