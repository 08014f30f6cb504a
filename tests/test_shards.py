"""Training sets as img2dataset writes them: the real img2dataset, run against an HTTP server on
127.0.0.1, in its three output formats; then index build, scan and guard through the installed
command line, after the original image files are gone."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_contracts import EXE, run

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "china", "flower"]
I2D = Path(sys.executable).parent / "img2dataset"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list = []  # paths asked for, to check what was fetched

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Quiet.requests.append(self.path)
        super().do_GET()


@pytest.fixture(scope="module")
def served(tmp_path_factory, photos):
    """The photographs as 96 px JPEG files behind http://127.0.0.1:PORT/, with a URL table
    (caption, LICENSE, similarity) that also names one missing file (a 404)."""
    root = tmp_path_factory.mktemp("i2d")
    www = root / "www"
    www.mkdir()
    for n in NAMES:
        photos[n].resize((96, 96)).save(www / f"{n}.jpg", quality=92)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    rows = [{"url": f"{base}/{n}.jpg", "caption": f"a photograph of {n}", "LICENSE": f"cc-by-{i}",
             "similarity": 0.3} for i, n in enumerate(NAMES)]
    rows.insert(3, {"url": f"{base}/missing.jpg", "caption": "gone", "LICENSE": "?", "similarity": 0.1})
    pd.DataFrame(rows).to_parquet(root / "urls.parquet")
    yield {"root": root, "www": www, "base": base, "rows": rows}
    httpd.shutdown()


def img2dataset(served, fmt: str) -> Path:
    out = served["root"] / f"out-{fmt}"
    if not out.is_dir():
        p = subprocess.run([str(I2D), "--url_list", str(served["root"] / "urls.parquet"), "--input_format", "parquet",
                            "--url_col", "url", "--caption_col", "caption",
                            "--save_additional_columns", "['LICENSE','similarity']", "--output_format", fmt,
                            "--output_folder", str(out), "--processes_count", "1", "--thread_count", "4",
                            "--image_size", "64", "--resize_mode", "center_crop", "--number_sample_per_shard", "4",
                            "--timeout", "5", "--retries", "0", "--enable_wandb", "False"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
    return out


def near_copy(photo: Image.Image, seed: int) -> Image.Image:
    """What a model that memorized the 64 px training image might draw: re-encoded and noisy."""
    buf = io.BytesIO()
    photo.resize((96, 96)).resize((64, 64), Image.BICUBIC).save(buf, "JPEG", quality=80)
    arr = np.asarray(Image.open(buf).convert("RGB"), np.float32)
    arr += np.random.default_rng(seed).normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


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


def clip_retrieval_folder(i2d: Path, clip_dir: Path, out: Path) -> Path:
    """What `clip-retrieval inference` writes for an img2dataset webdataset folder: float16,
    L2-normalised image embeddings per part, and a metadata part whose rows match them."""
    import tarfile

    from imgextract.embedders import load_embedder
    embedder = load_embedder(f"clip:{clip_dir}", "cpu")
    (out / "img_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    for n, table in enumerate(sorted(i2d.glob("*.parquet"))):
        meta = pd.read_parquet(table)
        meta = meta[meta["status"] == "success"]
        with tarfile.open(i2d / f"{table.stem}.tar") as tf:
            images = [Image.open(tf.extractfile(f"{k}.jpg")).convert("RGB") for k in meta["key"]]
        vectors = embedder.embed(images).astype(np.float16)
        np.save(out / "img_emb" / f"img_emb_{n}.npy", vectors)
        pd.DataFrame({"image_path": meta["key"].tolist(), "caption": meta["caption"].tolist(),
                      "url": meta["url"].tolist(), "LICENSE": meta["LICENSE"].tolist(),
                      "NSFW": ["UNLIKELY"] * len(meta)}).to_parquet(out / "metadata" / f"metadata_{n}.parquet")
    return out


def test_precomputed_embeddings_index_without_embedding_again(served, tmp_path, photos):
    from imgextract.tiny import save_tiny_clip
    i2d = img2dataset(served, "webdataset")
    clip = save_tiny_clip(tmp_path / "clip")
    emb = clip_retrieval_folder(i2d, clip, tmp_path / "emb")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, stdout, err = run("index", "build", emb, "--name", "e", "--embeddings", "--embedder", f"clip:{clip}",
                            "--images", i2d, env_extra=ix)
    assert code == 0, err
    assert "from a embeddings source" in stdout and "8 pixels available" in stdout
    import faiss
    stored = faiss.read_index(str(tmp_path / "ix" / "e" / "index.faiss")).reconstruct_n(0, 8)
    given = np.concatenate([np.load(p) for p in sorted((emb / "img_emb").glob("*.npy"))]).astype(np.float32)
    assert np.allclose(stored, given / np.linalg.norm(given, axis=1, keepdims=True), atol=1e-6)  # the vectors as given
    gens = tmp_path / "gens"
    gens.mkdir()
    near_copy(photos["rocket"], 0).save(gens / "copy_rocket.png")
    photos["clock"].resize((64, 64)).save(gens / "unrelated.png")
    code, stdout, err = run("scan", gens, "--index", "e", "-k", "8", "--out", tmp_path / "s", env_extra=ix)
    assert code == 0, err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [(Path(r["url"]).name, r["license"]) for r in summary["memorized_images"]] == [("rocket.jpg", "cc-by-3")]
    code, stdout, err = run("guard", gens / "copy_rocket.png", "--index", "e", "-k", "8", env_extra=ix)
    assert code == 1 and f"{served['base']}/rocket.jpg" in stdout and "licence: cc-by-3" in stdout, stdout + err
    # no --images, no URL, no local path: no candidate's pixels can be reached; rows say so instead of a distance
    bare = tmp_path / "emb-no-url"
    shutil.copytree(emb, bare)
    for meta in (bare / "metadata").glob("*.parquet"):
        pd.read_parquet(meta).drop(columns=["url"]).to_parquet(meta)
    code, _, err = run("index", "build", bare, "--name", "bare", "--embeddings", "--embedder", f"clip:{clip}",
                       env_extra=ix)
    assert code == 0, err
    code, stdout, err = run("scan", gens, "--index", "bare", "-k", "3", "--out", tmp_path / "s2", env_extra=ix)
    assert code == 0, err
    m = pd.read_parquet(tmp_path / "s2" / "matches.parquet")
    assert (m["pixels"] == "unavailable").all() and m["tiled_l2"].isna().all() and not m["memorized"].any()
    code, stdout, _ = run("guard", gens / "copy_rocket.png", "--index", "bare", env_extra=ix)
    assert code == 0 and "not tested" in stdout
    code, _, err = run("index", "build", emb, "--name", "wrong", "--embeddings", "--embedder", "pixel", env_extra=ix)
    assert code == 2 and "not (n, 768)" in err, err


def test_index_choice_rules():
    from imgextract.faiss_choice import choose_factory, parse_memory
    assert parse_memory("4G") == 4 * 2**30 and parse_memory("512m") == 512 * 2**20
    assert choose_factory(30_000, 512, parse_memory("4G")) == "Flat"
    assert choose_factory(1_000_000, 512, parse_memory("4G")) == "IVF4096,Flat"     # 2 GB of vectors fit
    assert choose_factory(1_000_000, 512, parse_memory("1G")).startswith("OPQ64_256,IVF4096_HNSW32,PQ64")
    assert choose_factory(2_000_000_000, 768, parse_memory("64G")) == "OPQ16_64,IVF131072_HNSW32,PQ16x8"
    with pytest.raises(Exception, match="do not fit"):
        choose_factory(2_000_000_000, 768, parse_memory("1G"))


def test_approximate_index_is_tuned_recorded_and_reranked_exactly(tmp_path):
    """An IVF index over clustered vectors (clip-retrieval layout): nprobe raised until recall@10 >= 0.95 at
    build, recorded, shown by `index info`; searches re-rank exactly, so their top 10 match exact search's."""
    from imgextract.faiss_choice import exact_top
    from imgextract.index import open_index
    from imgextract.tiny import save_tiny_clip
    clip = save_tiny_clip(tmp_path / "clip")  # 32-d, only to name the model that "made" the vectors
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 32))
    x = (centers[rng.integers(0, 40, 4000)] + 0.4 * rng.normal(size=(4000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    for n, part in enumerate(np.array_split(np.arange(4000), 3)):
        np.save(tmp_path / "emb" / "img_emb" / f"img_emb_{n}.npy", x[part].astype(np.float16))
        pd.DataFrame({"image_path": [f"k{i}" for i in part], "caption": [f"c{i}" for i in part]}).to_parquet(
            tmp_path / "emb" / "metadata" / f"metadata_{n}.parquet")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, _, err = run("index", "build", tmp_path / "emb", "--name", "v", "--embeddings", "--embedder",
                       f"clip:{clip}", "--factory", "IVF64,Flat", env_extra=ix)
    assert code == 0, err
    record = json.loads((tmp_path / "ix" / "v" / "embedder.json").read_text())
    assert record["faiss_factory"] == "IVF64,Flat" and record["recall_at_10"] >= 0.95
    assert 1 <= record["faiss_params"]["nprobe"] <= 64
    code, out, _ = run("index", "info", "v", env_extra=ix)
    assert f"nprobe={record['faiss_params']['nprobe']}" in out and "recall@10" in out and "exact re-rank" in out
    idx = open_index(tmp_path / "ix" / "v")
    queries = x[rng.choice(4000, 50, replace=False)] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, ids = idx.search(queries, 10)
    truth = exact_top(idx.vectors, queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]) >= 0.95
    code, _, err = run("index", "build", tmp_path / "emb", "--name", "w", "--embeddings", "--embedder",
                       f"clip:{clip}", "--max-memory", "lots", env_extra=ix)
    assert code == 2 and err.startswith("error: --max-memory 'lots'"), err


def test_url_table_fetches_only_candidates_once_and_remembers_dead_links(served, tmp_path, photos, monkeypatch):
    """LAION-style metadata with URLs and no images: scan fetches the candidates' images on demand into
    the cache, records each URL's status in the index folder, and never asks a dead link twice."""
    from imgextract.tiny import save_tiny_clip
    clip = save_tiny_clip(tmp_path / "clip")
    from imgextract.embedders import load_embedder
    embedder = load_embedder(f"clip:{clip}", "cpu")
    rows = served["rows"]
    ims = [Image.open(served["www"] / Path(r["url"]).name).convert("RGB").resize((64, 64))
           if "missing" not in r["url"] else photos["moon"].resize((64, 64)) for r in rows]
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    np.save(tmp_path / "emb" / "img_emb" / "img_emb_0.npy", embedder.embed(ims).astype(np.float16))
    pd.DataFrame({"url": [r["url"] for r in rows], "caption": [r["caption"] for r in rows],
                  "LICENSE": [r["LICENSE"] for r in rows]}).to_parquet(tmp_path / "emb" / "metadata" / "metadata_0.parquet")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "IMGEXTRACT_CACHE": str(tmp_path / "cache")}
    code, stdout, err = run("index", "build", tmp_path / "emb", "--name", "u", "--embeddings", "--embedder",
                            f"clip:{clip}", env_extra=ix)
    assert code == 0 and "9 pixels by URL" in stdout, stdout + err
    gens = tmp_path / "gens"
    gens.mkdir()
    near_copy(photos["rocket"], 0).save(gens / "copy_rocket.png")
    photos["moon"].resize((64, 64)).save(gens / "moon.png")  # its nearest "training image" is the dead link
    _Quiet.requests.clear()
    code, stdout, err = run("scan", gens, "--index", "u", "-k", "2", "--relative-n", "0", "--out", tmp_path / "s",
                            env_extra=ix)
    assert code == 0, err
    asked = list(_Quiet.requests)
    assert len(asked) <= 2 * 2 + 2 and "/rocket.jpg" in asked and "/missing.jpg" in asked  # candidates only
    assert len(asked) < len(rows)
    assert asked.count("/missing.jpg") == 1  # a 404 is not retried
    status = [json.loads(line) for line in (tmp_path / "ix" / "u" / "url_status.jsonl").read_text().splitlines()]
    assert {Path(s["url"]).name: s["status"] for s in status}["missing.jpg"] == "404"
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [Path(r["url"]).name for r in summary["memorized_images"]] == ["rocket.jpg"]
    m = pd.read_parquet(tmp_path / "s" / "matches.parquet")
    assert (m.loc[m["train_path"].str.endswith("missing.jpg"), "pixels"] == "unavailable").all()
    _Quiet.requests.clear()
    code, _, err = run("scan", gens, "--index", "u", "-k", "2", "--relative-n", "0", "--out", tmp_path / "s2",
                       env_extra=ix)
    assert code == 0, err
    assert _Quiet.requests == []  # cached images, and the dead link remembered
    code, _, err = run("index", "build", served["root"] / "urls.parquet", "--name", "x", env_extra=ix)
    assert code == 2 and "by URL only" in err and "img2dataset" in err, err
