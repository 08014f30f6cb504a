"""`imgextract index ...`: errors before work, ownership of folders, one writer, thumbnails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from helpers import EXE, expect_error, run, tree_digest


def test_index_build_bad_arguments(env, tmp_path):
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, _, err = run("index", "build", env["train"], "--name", "f", "--factory", "Bogus", env_extra=ix)
    expect_error(code, err, "--factory 'Bogus'", "Flat")
    code, _, err = run("index", "build", env["train"], "--name", "b", "--batch-size", "0", env_extra=ix)
    expect_error(code, err, "--batch-size 0")
    for bad in ("", ".", ".."):
        code, _, err = run("index", "build", env["train"], "--name", bad, "--overwrite", env_extra=ix)
        expect_error(code, err, "names no index")
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run("index", "build", env["train"], "--name", afile, env_extra=ix)
    expect_error(code, err, "names a file")
    for bad in ("30x", "0", "axb", "1x2x3"):
        code, _, err = run("index", "build", env["train"], "--name", "t", "--thumb-size", bad, env_extra=ix)
        expect_error(code, err, f"--thumb-size {bad!r}", "HxW")
    code, _, err = run("index", "build", env["train"], "--name", "t", "--workers", "-1", env_extra=ix)
    expect_error(code, err, "--workers -1")
    assert not (tmp_path / "ix").exists() or not any((tmp_path / "ix").iterdir())


def test_index_build_with_no_readable_image_lists_them(env, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for n in ("zero.png", "random.png", "text.png"):
        shutil.copy(env["odd"] / n, bad / n)
    code, _, err = run("index", "build", bad, "--name", tmp_path / "i")
    line = expect_error(code, err, "no readable image", "3 skipped", at_start=False)  # found only by reading
    listed = err.split(line, 1)[1]
    for n in ("zero.png", "random.png", "text.png"):
        assert n in listed
    assert not (tmp_path / "i").exists()


def test_thumbnails_prune_and_say_when_missing(env, tmp_path, photos):
    """`index info` lists the thumbnails; a scan at a size without them makes them from the candidates'
    pixels (so it prunes: rows with exact = false) and says how to store them; an index built with
    --thumb-size for that size gives that scan's very rows without decoding the pruned candidates."""
    code, out, _ = run("index", "info", "train", env_extra=env["ix"])
    assert code == 0 and "thumbnails 96x96 (6 images)" in out, out
    gens = tmp_path / "gens"
    gens.mkdir()
    for n in ("astronaut", "clock", "page"):
        photos[n].resize((64, 64)).save(gens / f"{n}.png")
    code, _, err = run("scan", gens, "--index", "train", "-k", "6", "--out", tmp_path / "s1", env_extra=env["ix"])
    assert code == 0 and "no thumbnails for 64x64" in err and "--thumb-size 64x64" in err, err
    m1 = pd.read_parquet(tmp_path / "s1" / "matches.parquet")
    assert (~m1["exact"]).sum() > 0 and m1["memorized"].any()
    code, _, err = run("index", "build", env["train"], "--name", "t64", "--thumb-size", "64", env_extra=env["ix"])
    assert code == 0, err
    code, _, err = run("scan", gens, "--index", "t64", "-k", "6", "--out", tmp_path / "s2", env_extra=env["ix"])
    assert code == 0 and "no thumbnails" not in err, err
    m2 = pd.read_parquet(tmp_path / "s2" / "matches.parquet")
    pd.testing.assert_frame_equal(m1, m2)


def test_overwrite_refuses_a_folder_that_is_not_an_index(env, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(env["train"], work / "train")
    before = tree_digest(work / "train")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    # a bare name resolves under the index root, never to ./train
    code, out, err = run("index", "build", "./train", "--name", "train", "--overwrite", cwd=work, env_extra=ix)
    assert code == 0, err
    assert (tmp_path / "ix" / "train" / "embedder.json").is_file() and tree_digest(work / "train") == before
    # a path to a folder that is not an index: refused, byte for byte intact
    code, _, err = run("index", "build", work / "train", "--name", work / "train", "--overwrite", env_extra=ix)
    expect_error(code, err, "is not an imgextract index", "refusing")
    assert tree_digest(work / "train") == before
    # an index is replaced
    code, out, err = run("index", "build", work / "train", "--name", "train", "--overwrite", env_extra=ix)
    assert code == 0, err


HOLD = """
import sys, time
from pathlib import Path
from imgextract.locks import exclusive
with exclusive(Path(sys.argv[1]), "x"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(lock: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_and_a_dead_holder_is_taken_over(env, tmp_path, tiny_pipeline_dir):
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    holder = _holder(tmp_path / "ix" / ".busy.lock")
    try:
        code, _, err = run("index", "build", env["train"], "--name", "busy", env_extra=ix)
        expect_error(code, err, "being written by another imgextract", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run("index", "build", env["train"], "--name", "busy", env_extra=ix)  # stale lock: taken over
    assert code == 0, err

    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    run_dir = tmp_path / "run"
    holder = _holder(run_dir / ".imgextract.lock")
    try:
        code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", run_dir, "--samples", "1",
                           "--steps", "1", "--size", "32", "32")
        expect_error(code, err, "run folder", "being written by another imgextract", f"pid {holder.pid}")
        assert not (run_dir / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_index_builds(env, tmp_path):
    ix = {**os.environ, "IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "TQDM_DISABLE": "1"}
    procs = [subprocess.Popen([str(EXE), "index", "build", str(env["train"]), "--name", "same"], env=ix,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    refused = next(e for c, e in results if c == 2)
    assert "being written by another imgextract" in refused or "already exists" in refused
    from imgextract.index.store import open_index
    assert len(open_index(tmp_path / "ix" / "same").table) == 6
