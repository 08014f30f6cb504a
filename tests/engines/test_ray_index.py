"""`index build --engine ray`: the same parts on Ray Data actors, one of them SIGKILLed mid-build,
and the index equal to a local build of the same img2dataset output."""

from __future__ import annotations


import pandas as pd
import pytest

from helpers import img2dataset, kill_once, run

pytest.importorskip("ray")


def test_index_built_on_ray_equals_the_local_build_and_survives_a_killed_worker(served, tmp_path):
    shards = img2dataset(served, "webdataset")
    assert len(list(shards.glob("*.tar"))) >= 3   # one part per shard: several parts to hand out
    env = {"IMGEXTRACT_INDEX_DIR": str(tmp_path)}
    code, out, err = run("index", "build", shards, "--name", "local", env_extra=env)
    assert code == 0, err
    # once a first part is done, its worker (sleeping after it) is killed: that part is built again
    with kill_once(lambda: bool(list((tmp_path / ".ray.tmp").glob("parts/*.done.json"))), "PartWorker") as killed:
        code, out, err = run("index", "build", shards, "--name", "ray", "--engine", "ray",
                             env_extra={**env, "IMGEXTRACT_SLOW_PART": "1.5"}, timeout=600)
    assert code == 0, err
    assert killed, "no part worker was found to kill"
    local, ray = tmp_path / "local", tmp_path / "ray"
    a, b = pd.read_parquet(local / "images.parquet"), pd.read_parquet(ray / "images.parquet")
    assert len(a) == 8 and a.equals(b)                       # the same rows, ids and locators
    assert (local / "vectors.f16").read_bytes() == (ray / "vectors.f16").read_bytes()
    assert (local / "index.faiss").read_bytes() == (ray / "index.faiss").read_bytes()
    for f in sorted((local / "thumbs").iterdir()):
        assert f.read_bytes() == (ray / "thumbs" / f.name).read_bytes()
    assert not (tmp_path / ".ray.tmp").exists()


def test_ray_options_without_the_ray_engine_are_refused(tmp_path, train_dir):
    code, _, err = run("index", "build", train_dir, "--name", "x", "--ray-workers", "2",
                       env_extra={"IMGEXTRACT_INDEX_DIR": str(tmp_path)})
    assert code == 2 and err.startswith("error: --address and --ray-workers need --engine ray")
    assert not list(tmp_path.iterdir())
