"""The sweep as users run it: `imgextract run audit.toml` on the local engine and on Ray, a killed
Ray worker, and `--keep evidence`. All through the installed command in a subprocess.

The toy audit: the memorizing toy model (one image 60 times among 5 singletons), its 6 training
captions and 6 it never saw, 6 samples each, shards of 2 captions, the clique test on every caption.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_contracts import expect_error, run

pytest.importorskip("ray")

SAMPLES = 6
CAPTIONS = 12


def write_config(folder: Path, model: Path, out: str, engine: str = "local", keep: str = "all",
                 shard_size: int = 2 * SAMPLES) -> Path:
    cfg = folder / f"{out}.toml"
    engine_keys = 'kind = "ray"\ncpus = 2\n' if engine == "ray" else 'kind = "local"\n'
    cfg.write_text(f"""
out = "{out}"
keep = "{keep}"
[index]
source = "{model / 'train'}"
name = "{folder / 'index'}"
[generate]
captions = "captions.csv"
model = "{model}"
samples = {SAMPLES}
steps = 25
guidance = 3.0
batch_size = 6
device = "cpu"
shard_size = {shard_size}
[scan]
k = 3
relative_n = 0
[cliques]
delta = 0.15
min_size = 4
[engine]
{engine_keys}
""")
    return cfg


def manifests(run_dir: Path) -> pd.DataFrame:
    files = sorted((run_dir / "samples").glob("shard-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def png_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in (run_dir / "samples").rglob("*.png"))


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory, memorizing_model):
    """The toy audit on the local engine with --keep evidence: the model's 6 training captions and
    6 captions it never saw (most captions of a real sweep are not memorized)."""
    from imgextract.toy import training_set
    folder = tmp_path_factory.mktemp("sweep")
    model, cfg = memorizing_model
    _, held = training_set(cfg)
    rows = (model / "train" / "copies.csv").read_text().strip().splitlines()
    rows += [f',"{h.caption}",' for h in held[:CAPTIONS - len(rows) + 1]]
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run("run", write_config(folder, model, "evidence"), "--keep", "evidence", cwd=folder, timeout=600)
    assert code == 0, err
    return folder, model, folder / "evidence"


def _kill_first_draw_worker(run_dir: Path, killed: list, stop: threading.Event) -> None:
    """Once the first shard has landed, SIGKILL the Ray process that draws samples."""
    while not stop.is_set():
        if list((run_dir / "samples").glob("shard-*.parquet")):
            ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
            for line in ps.splitlines():
                pid, _, args = line.strip().partition(" ")
                if "DrawWorker" in args and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_run(evidence_run):
    """The same audit on a local Ray (2 CPUs), --keep all, with a draw worker SIGKILLed mid-run."""
    folder, model, _ = evidence_run
    run_dir = folder / "ray"
    killed, stop = [], threading.Event()
    watcher = threading.Thread(target=_kill_first_draw_worker, args=(run_dir, killed, stop), daemon=True)
    watcher.start()
    code, out, err = run("run", write_config(folder, model, "ray", engine="ray"), cwd=folder, timeout=600)
    stop.set()
    watcher.join(5)
    assert code == 0, err
    return run_dir, out, killed


def test_ray_engine_draws_the_same_samples_and_verdicts(evidence_run, ray_run):
    _, _, local = evidence_run
    ray_dir, out, _ = ray_run
    assert "ray: 1 draw worker(s)" in out
    a, b = manifests(local), manifests(ray_dir)
    assert len(a) == CAPTIONS * SAMPLES and len(b) == len(a)
    assert a["file"].tolist() == b["file"].tolist()
    assert a["sha256"].tolist() == b["sha256"].tolist()   # byte-identical PNGs on CPU
    for f, digest in zip(b["file"], b["sha256"]):       # and the files on disk are those bytes
        assert hashlib.sha256((ray_dir / f).read_bytes()).hexdigest() == digest
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


def test_keep_evidence_keeps_the_findings_and_far_fewer_bytes(evidence_run, ray_run):
    folder, model, ev = evidence_run
    every, _, _ = ray_run
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
    # far fewer bytes than keeping everything (the Ray run kept all of the same samples)
    all_png, ev_png = png_bytes(every), png_bytes(ev)
    print(f"PNG bytes: all {all_png}, evidence {ev_png} ({ev_png / all_png:.2f}); samples kept {len(kept)}/{len(m)}")
    assert ev_png <= 0.5 * all_png
    # everything the sweep stores per sample (PNGs, manifests, embeddings): at 32 px a 768-d pixel
    # embedding weighs about what a PNG does, so the toy saves less here than a 512 px sweep does
    def stored_bytes(run_dir: Path) -> int:
        return sum(p.stat().st_size for p in (run_dir / "samples").rglob("*") if p.is_file())
    print(f"stored: all {stored_bytes(every)}, evidence {stored_bytes(ev)}")
    assert stored_bytes(ev) <= 0.75 * stored_bytes(every)
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


def test_sweep_shard_flags_a_drawn_watermark_as_the_watermarks_command_does(tmp_path, pixel_index):
    """The test stage's OCR on in-memory samples: same rows as the detector on the files, and a
    marked sample is evidence (kept) while a clean one that matches nothing is not."""
    from imgextract.generate import Drawn, png_bytes
    from imgextract.markdata import draw_mark, font_files, photo
    from imgextract.scan import ScanParams
    from imgextract.sweep import ShardTester, SweepSettings
    from imgextract.watermarks import Detector
    rng = np.random.default_rng(7)
    images = [draw_mark(photo("flower", 512, rng), "Getty Images", "single", rng, font_files(), opacity=0.7),
              photo("china", 512, rng)]
    drawn = []
    for i, im in enumerate(images):
        meta = {"caption_id": "c0", "caption": "a flower", "sample_index": i, "seed": i, "steps": 1, "guidance": 1.0,
                "scheduler": None, "height": 512, "width": 512}
        drawn.append(Drawn(meta, f"samples/shard-00000/c000000_s{i:05d}.png", png_bytes(im, meta)))
    run_dir = tmp_path / "run"
    settings = SweepSettings(ScanParams(index=str(pixel_index.path), k=3, relative_n=0), None, "evidence",
                             watermarks=(None, None))
    counts = ShardTester(run_dir, settings).finish(0, drawn)
    assert counts == {"shard": 0, "samples": 2, "kept": 1, "memorized": 0}
    marks = pd.read_parquet(run_dir / "watermarks" / "shard-00000.parquet")
    assert marks["watermark"].tolist() == [True, False] and marks["brand"].iat[0] == "Getty Images"
    expected = Detector().detect(images[0])
    assert list(marks["box"].iat[0]) == list(expected["box"]) and marks["text"].iat[0] == expected["text"]
    manifest = pd.read_parquet(run_dir / "samples" / "shard-00000.parquet")
    assert manifest["kept"].tolist() == [True, False]
    assert (run_dir / drawn[0].rel).is_file() and not (run_dir / drawn[1].rel).exists()


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
