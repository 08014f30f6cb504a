"""The sweep on Ray Data: the same samples and verdicts as the local engine, and a killed worker."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers import CAPTIONS, SAMPLES, kill_once, manifests, run, write_config

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_run(evidence_run):
    """The same audit on a local Ray (2 CPUs), --keep all, with a draw worker SIGKILLed mid-run."""
    folder, model, _ = evidence_run
    run_dir = folder / "ray"
    # once the first shard has landed, the Ray process that draws samples is killed
    with kill_once(lambda: bool(list((run_dir / "samples").glob("shard-*.parquet"))), "DrawWorker") as killed:
        code, out, err = run("run", write_config(folder, model, "ray", engine="ray"), cwd=folder, timeout=600)
    assert code == 0, err
    return run_dir, out, killed


def test_ray_engine_draws_the_same_samples_and_verdicts(all_run, ray_run):
    local = all_run
    ray_dir, out, _ = ray_run
    assert "ray: 1 draw worker(s)" in out
    a, b = manifests(local), manifests(ray_dir)
    assert len(a) == CAPTIONS * SAMPLES and len(b) == len(a)
    assert a["file"].tolist() == b["file"].tolist()
    assert a["sha256"].tolist() == b["sha256"].tolist()   # byte-identical PNGs on CPU
    for f in b["file"]:                                  # and the files on disk are those bytes, on both engines
        assert (ray_dir / f).read_bytes() == (local / f).read_bytes()
    ma, mb = pd.read_parquet(local / "matches.parquet"), pd.read_parquet(ray_dir / "matches.parquet")
    mem_a = set(ma.loc[ma["memorized"], "train_id"])
    assert mem_a and mem_a == set(mb.loc[mb["memorized"], "train_id"])

    def memorized_samples(m, root):
        return sorted(Path(p).relative_to(root.resolve()).as_posix() for p in m.loc[m["memorized"], "generation_path"])
    assert memorized_samples(ma, local) == memorized_samples(mb, ray_dir)
    ca, cb = pd.read_parquet(local / "cliques.parquet"), pd.read_parquet(ray_dir / "cliques.parquet")
    assert ca["largest_clique"].tolist() == cb["largest_clique"].tolist() and ca["flagged"].any()
    assert (ray_dir / "report.html").is_file()


def test_killed_ray_worker_still_ends_with_every_sample_once(ray_run):
    run_dir, _, killed = ray_run
    assert killed, "no draw worker was found to kill"
    m = manifests(run_dir)
    keys = list(zip(m["caption_id"].astype(str), m["sample_index"]))
    assert len(keys) == len(set(keys)) == CAPTIONS * SAMPLES     # every sample exactly once
    on_disk = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "samples").rglob("*.png"))
    assert on_disk == sorted(m["file"])                         # no stray or half-written files
    assert not list(run_dir.rglob("*.tmp"))
    assert len(pd.read_parquet(run_dir / "matches.parquet")) == CAPTIONS * SAMPLES * 3
