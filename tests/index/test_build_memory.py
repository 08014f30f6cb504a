"""`--max-memory` bounds the build process itself: a build of precomputed vectors, sampled from /proc while it
runs, keeps its peak anonymous memory (RssAnon: what it holds itself, not the files it maps) under the budget.
Before exact_top streamed its scores in bounded chunks, the recall tuning alone took a gigabyte here."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import EXE


def peak_anonymous(cmd: list[str], env: dict) -> tuple[int, int, str]:
    """(exit code, the child's peak RssAnon in bytes sampled every 20 ms, stderr)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except OSError:
                return
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    _, err = p.communicate(timeout=600)
    stop.set()
    t.join()
    return p.returncode, peak[0], err


def test_a_build_stays_within_its_memory_budget(tmp_path):
    from imgextract.demo.tiny import save_tiny_clip
    dim, n, parts = 384, 80_000, 2
    clip = save_tiny_clip(tmp_path / "clip", embed_dim=dim)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(512, dim)).astype(np.float32)
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    for k, ids in enumerate(np.array_split(np.arange(n), parts)):
        x = centers[rng.integers(0, 512, len(ids))] + 0.6 * rng.normal(size=(len(ids), dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(tmp_path / "emb" / "img_emb" / f"img_emb_{k}.npy", x.astype(np.float16))
        pd.DataFrame({"image_path": [f"{i:09d}" for i in ids], "caption": [f"caption {i}" for i in ids],
                      "url": [f"https://example.invalid/{i}.jpg" for i in ids]}).to_parquet(
            tmp_path / "emb" / "metadata" / f"metadata_{k}.parquet")
    budget = 1024 * 2**20
    env = {**os.environ, "IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    code, peak, err = peak_anonymous([str(EXE), "index", "build", str(tmp_path / "emb"), "--name", "m", "--embeddings",
                                      "--embedder", f"clip:{clip}", "--max-memory", "1G"], env)
    assert code == 0, err
    assert 0 < peak <= budget, f"peak anonymous {peak / 2**20:.0f} MiB over the 1 GiB budget"
