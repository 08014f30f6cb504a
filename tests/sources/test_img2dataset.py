"""Training sets as img2dataset writes them: the real img2dataset, run against an HTTP server on
127.0.0.1, in its three output formats; then index build, scan and guard through the installed
command line, after the original image files are gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import EXE, img2dataset, near_copy, run


@pytest.mark.parametrize("fmt", ["webdataset", "files", "parquet"])
def test_img2dataset_output_indexes_in_place_and_findings_name_url_and_licence(served, fmt, tmp_path, photos):
    out = img2dataset(served, fmt)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, stdout, err = run("index", "build", out, "--name", "laion", env_extra=ix)
    assert code == 0, err
    assert f"from a img2dataset-{fmt} source" in stdout and "8 success" in stdout and "1 failed_to_download" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # read in place: nothing written there
    table = pd.read_parquet(tmp_path / "ix" / "laion" / "images.parquet")
    assert len(table) == 8 and {"url", "LICENSE", "key", "shard", "download_sha256"} <= set(table.columns)
    if fmt == "webdataset":
        assert table["path"].str.contains(r"\.tar::\d+\+\d+$").all()  # tar member by offset, nothing extracted
    record = json.loads((tmp_path / "ix" / "laion" / "embedder.json").read_text())
    assert record["source_kind"] == f"img2dataset-{fmt}"
    assert record["source_statuses"]["failed_to_download"] == 1
    # the original files are gone: everything now comes from the shards
    hidden = served["root"] / "www-hidden"
    served["www"].rename(hidden)
    try:
        gens = tmp_path / "gens"
        gens.mkdir()
        for i, n in enumerate(["rocket", "china"]):
            near_copy(photos[n], i).save(gens / f"copy_{n}.png")
        photos["clock"].resize((64, 64)).save(gens / "unrelated.png")
        code, stdout, err = run("scan", gens, "--index", "laion", "-k", "3", "--out", tmp_path / "scan", env_extra=ix)
        assert code == 0, err
        summary = json.loads((tmp_path / "scan" / "summary.json").read_text())
        found = {Path(r["url"]).name: r["license"] for r in summary["memorized_images"]}
        assert found == {"rocket.jpg": "cc-by-3", "china.jpg": "cc-by-6"}, summary["memorized_images"]
        assert "url: " + served["base"] + "/rocket.jpg  licence: cc-by-3" in stdout
        code, stdout, err = run("guard", gens / "copy_rocket.png", "--index", "laion", env_extra=ix)
        assert code == 1, err
        assert f"{served['base']}/rocket.jpg" in stdout and "licence: cc-by-3" in stdout
        code, _, err = run("report", tmp_path / "scan", env_extra=ix)
        assert code == 0, err
        page = (tmp_path / "scan" / "report.html").read_text()
        assert page.count("<section class=entry") == 2 and "cc-by-6" in page
    finally:
        hidden.rename(served["www"])


def test_a_shard_still_being_written_is_skipped(served, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(img2dataset(served, "webdataset"), out)
    (out / "00001_stats.json").unlink()  # as while img2dataset is still writing shard 00001
    code, stdout, err = run("index", "build", out, "--name", tmp_path / "ix")
    assert code == 0, err
    assert "skipped shard 00001: still being written" in err
    table = pd.read_parquet(tmp_path / "ix" / "images.parquet")
    assert set(table["shard"]) == {"00000", "00002"} and len(table) == 8 - 4  # shard 00001 held 4 of the 8


def test_killed_build_resumes_to_the_same_rows(served, tmp_path):
    """kill -9 in the middle of `index build`, run it again: the same index rows as a clean build."""
    out = img2dataset(served, "webdataset")
    code, _, err = run("index", "build", out, "--name", tmp_path / "clean", "--batch-size", "1")
    assert code == 0, err
    env = {**os.environ, "IMGEXTRACT_SLOW_PART": "2"}  # test hook: sleep after each finished part
    p = subprocess.Popen([str(EXE), "index", "build", str(out), "--name", str(tmp_path / "ix"), "--batch-size", "1"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = tmp_path / ".ix.tmp" / "parts"
    deadline = time.time() + 120
    while not list(parts.glob("*.done.json")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert len(list(parts.glob("*.done.json"))) == 1 and not (tmp_path / "ix").exists()
    code, _, err = run("index", "build", out, "--name", tmp_path / "ix", "--batch-size", "1")
    assert code == 0, err
    assert "resumed an interrupted build: 1 part(s) were already done" in err
    a = pd.read_parquet(tmp_path / "clean" / "images.parquet")
    b = pd.read_parquet(tmp_path / "ix" / "images.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert not (tmp_path / ".ix.tmp").exists()


def _forge_last_member(tar: Path, size: int) -> None:
    """Rewrite the last image member's tar header to claim ``size`` bytes (base-256, checksum fixed)."""
    import tarfile
    with tarfile.open(tar) as tf:
        member = [m for m in tf if m.name.endswith((".jpg", ".png", ".webp"))][-1]
    data = bytearray(tar.read_bytes())
    h = member.offset
    data[h + 124:h + 136] = b"\x80" + b"\0" * 3 + size.to_bytes(8, "big")
    data[h + 148:h + 156] = b" " * 8
    data[h + 148:h + 156] = f"{sum(data[h:h + 512]):06o}\0 ".encode()
    tar.write_bytes(bytes(data))


def test_bad_shards_are_listed_and_the_rest_is_built(served, tmp_path):
    """A forged member header (10^12 bytes), a truncated tar, a malformed _stats.json and a shard without
    its key column: each shard is listed in skipped.json with its reason; the good shard is indexed."""
    out = tmp_path / "bad"
    shutil.copytree(img2dataset(served, "webdataset"), out)
    for ext in (".tar", ".parquet", "_stats.json"):     # a fourth shard, a copy of the first, stays good
        shutil.copy(out / f"00000{ext}", out / f"00003{ext}")
    _forge_last_member(out / "00000.tar", 10 ** 12)
    (out / "00001.tar").write_bytes((out / "00001.tar").read_bytes()[:1500])
    (out / "00002_stats.json").write_text(json.dumps([{"successes": "many"}]))
    pd.read_parquet(out / "00002.parquet").drop(columns=["key"]).to_parquet(out / "00002.parquet")
    code, stdout, err = run("index", "build", out, "--name", tmp_path / "ix")
    assert code == 0 and "Traceback" not in err, err
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads((tmp_path / "ix" / "skipped.json").read_text())}
    assert {"00000.parquet", "00001.parquet", "00002.parquet"} <= set(skipped), skipped
    assert all(skipped[f"0000{i}.parquet"].startswith(f"bad shard 0000{i}") for i in range(3))
    for i in range(3):
        assert f"skipped {out / f'0000{i}.parquet'}: bad shard 0000{i}" in err, err
    table = pd.read_parquet(tmp_path / "ix" / "images.parquet")
    assert set(table["shard"]) == {"00003"} and len(table) >= 1
