"""Helpers the tests share: the installed command in a subprocess, odd files, a quiet local server."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

I2D = Path(sys.executable).parent / "img2dataset"
EXE = Path(sys.executable).parent / "imgextract"


RUN_LOG = os.environ.get("IMGEXTRACT_TEST_RUN_LOG")   # a file: each command's words, exit code and seconds


def run(*args, cwd=None, env_extra=None, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(env_extra or {})}
    start = time.monotonic()
    p = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=timeout)
    if RUN_LOG:   # where the suite's time goes: `sort -t$'\t' -k3 -n` the file after a run
        words = [str(a) for a in args if not str(a).startswith("/")][:3]
        with open(RUN_LOG, "a") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}\t{' '.join(words)}\t"
                    f"{time.monotonic() - start:.2f}\t{p.returncode}\n")
    return p.returncode, p.stdout, p.stderr


def first(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def expect_error(code, err, *words, at_start=True):
    assert code == 2, err
    line = first(err) if at_start else next((ln for ln in err.splitlines() if ln.startswith("error: ")), "")
    assert line.startswith("error: "), err
    assert "Traceback" not in err, err
    for w in words:
        assert w in line, (w, line)
    return line


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG whose header says side×side grey pixels; only the first rows are present (enough to open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = zlib.compress(b"\x00" * ((side + 1) * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


class Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list = []  # paths asked for, to check what was fetched

    def log_message(self, *args):
        pass

    def do_GET(self):
        Quiet.requests.append(self.path)
        super().do_GET()


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


# -- the toy sweep the engine tests share ------------------------------------------------------------------

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


@contextlib.contextmanager
def kill_once(ready: Callable[[], bool], name: str):
    """While the block runs: once ``ready()`` holds, SIGKILL the first process descended from this one whose
    command line names ``name`` (a Ray worker class). Only descendants: a test running beside this one in
    another pytest worker has processes of the same names. Yields the killed pids (empty when none)."""
    killed, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if ready():
                ps = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
                rows = [line.split(None, 2) + [""] for line in ps.splitlines() if line.strip()]
                parent = {int(r[0]): int(r[1]) for r in rows}

                def ours(pid: int) -> bool:
                    while pid > 1:
                        pid = parent.get(pid, 1)
                        if pid == os.getpid():
                            return True
                    return False
                for pid, _, args, *_ in rows:
                    if name in args and ours(int(pid)):
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append(int(pid))
                        return
            time.sleep(0.1)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join(5)


def reference_copies(generations, train_dir: Path) -> dict[str, dict[str, str]]:
    """The copy verdict of every generation against every training image, by brute force (no index, no
    thumbnail screen, no top-k): {generation path: {training file name: kind}} for the pairs that copy.
    What a scan must name, whatever a toy happened to learn on this machine's float kernels."""
    from imgextract import copies
    from imgextract.distance import fit
    from imgextract.sources.images import open_rgb
    trains = {p.name: open_rgb(p) for p in sorted(Path(train_dir).glob("*.png"))}
    out = {}
    for g in generations:
        gen = open_rgb(Path(g))
        size = (gen.height, gen.width)
        judged = [copies.judge(np.asarray(gen), np.asarray(fit(t, size))) for t in trains.values()]
        copies.mark_templates(judged)
        out[str(g)] = {n: j.kind for n, j in zip(trains, judged) if j.kind != "none"}
    return out


def scanned_copies(matches: pd.DataFrame) -> dict[str, dict[str, str]]:
    """A scan's matches in :func:`reference_copies`' form (every generation, copies or none)."""
    out: dict[str, dict[str, str]] = {g: {} for g in matches["generation_path"]}
    for g, path, kind in matches[["generation_path", "train_path", "copy_kind"]].itertuples(index=False):
        if kind != "none":
            out[g][Path(path).name] = kind
    return out


def shared_dir(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the parent of the workers' own base folders)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(folder)`` once per test run, whichever worker asks first; the others wait for it and reuse the
    folder. A make that fails leaves no done mark, so the next asker tries again and fails as visibly."""
    from filelock import FileLock
    folder = shared_dir(tmp_path_factory) / name
    done = folder.parent / f"{name}.done"
    with FileLock(str(folder) + ".lock"):
        if not done.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            make(folder)
            done.touch()
    return folder


# -- the model families' audits ------------------------------------------------------------------------------

def family_audit_config(folder: Path, model: Path, index: Path, engine: str = "local") -> Path:
    """The audit file a user writes: the model and its captions, nothing about steps, guidance or size."""
    (folder / "captions.txt").write_text("a red rocket\n")
    cfg = folder / "audit.toml"
    engine_keys = 'kind = "ray"\ncpus = 2\n' if engine == "ray" else 'kind = "local"\n'
    cfg.write_text(f"""out = "{folder / 'run'}"
[index]
name = "{index}"
[generate]
captions = "{folder / 'captions.txt'}"
model = "{model}"
samples = 2
device = "cpu"
[cliques]
min_size = 2
[engine]
{engine_keys}""")
    return cfg


def sweep_and_scan(model: Path, captions: list[str], train: Path, out: Path, samples: int = 4, steps: int = 25,
                   batch_size: int = 12) -> pd.DataFrame:
    """A toy's samples of ``captions`` (guidance 3), scanned against ``train`` with every training image a
    candidate (the brute-force reference has no top-k): the scan's matches."""
    from imgextract.app.commands import build_index, run_generation, run_scan
    from imgextract.stages.generate import SamplingConfig
    out.mkdir(parents=True, exist_ok=True)
    (out / "caps.txt").write_text("\n".join(captions) + "\n")
    index = build_index(train, str(out / "index"), progress=False)
    every = len(list(Path(train).glob("*.png")))
    run = out / "run"
    run_generation(out / "caps.txt", str(model), run, SamplingConfig(samples=samples, steps=steps, guidance=3.0,
                                                                     device="cpu", batch_size=batch_size), say=str)
    run_scan(run, str(index.path), run, k=every, threshold=0.15, grid=4, relative_n=0, say=str)
    return pd.read_parquet(run / "matches.parquet")
