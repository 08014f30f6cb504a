"""Benchmark: indexes at LAION scale, and ingest from img2dataset tars against the decode floor.

    python scripts/bench_index.py --n 1000000 --max-memory 4G      # vectors (clip-retrieval layout)
    python scripts/bench_index.py --n 0 --ingest 2000               # tars only

Vectors: N clustered 512-d vectors (4,096 Gaussian clusters, L2-normalised), float16, written as
clip-retrieval writes them (img_emb/img_emb_N.npy + metadata/metadata_N.parquet, 100k per part).
`imgextract index build --embeddings` runs in a subprocess (its peak RSS is the child's); then
1,000 held-out queries (perturbed stored vectors) go through the built index (re-ranked, as scan
uses it) and through exact search, and the run prints the chosen factory, build seconds, peak
RSS, index bytes, recall@10 and queries/s of both.

With --autofaiss, autofaiss 2.18 (pinned, in its own venv under the work folder) builds its index of
the same img_emb folder within the same budget, and the same queries are run against it: its build
seconds, peak memory, recall@10 and queries/s print beside imgextract's.

Ingest: INGEST JPEGs (--ingest-size, 512 px by default) of real photographs packed as img2dataset webdataset shards
(NNNNN.tar + NNNNN.parquet + NNNNN_stats.json); `index build` on them (pixel embedder) against
the decode-only floor: the same JPEG bytes read from the tars and decoded on all cores, measured
just before and just after each build. Two forms, alternated: the default (box thumbnails stored),
and --no-thumbs, the form docs/scale.md plans for 10^8-10^9 rows (candidates' thumbnails made on
demand); their rows and vectors are checked equal.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgextract.folders import remove_own
from imgextract.index.choice import parse_memory
from workdir import bench_workdir

EXE = Path(sys.executable).parent / "imgextract"
PART = 100_000


def write_vectors(folder: Path, n: int, d: int = 512, clusters: int = 4096, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d)).astype(np.float32)
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    for p, start in enumerate(range(0, n, PART)):
        m = min(PART, n - start)
        x = centers[rng.integers(0, clusters, m)] + 0.6 * rng.normal(size=(m, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(folder / "img_emb" / f"img_emb_{p}.npy", x.astype(np.float16))
        pd.DataFrame({"image_path": [f"{start + i:09d}" for i in range(m)],
                      "caption": [f"caption {start + i}" for i in range(m)],
                      "url": [f"https://example.invalid/{start + i}.jpg" for i in range(m)]}).to_parquet(
            folder / "metadata" / f"metadata_{p}.parquet")


class PeakAnon:
    """The child's peak anonymous memory (RssAnon in /proc/PID/status), sampled every 50 ms: the
    memory a build holds itself, as against the file pages it maps; and its peak RSS (VmHWM, which
    counts both)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.hwm, self._stop = pid, 0, 0, threading.Event()
        self.start, self.peak_at = time.monotonic(), 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
                    if anon > self.peak:
                        self.peak, self.peak_at = anon, time.monotonic() - self.start
                elif line.startswith("VmHWM:"):
                    self.hwm = max(self.hwm, int(line.split()[1]) * 1024)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


class Lines:
    """A child's stderr read as it comes, each line (progress lines end in \\r too) with its time since
    ``start``: which step of the build was running when its memory peaked."""

    def __init__(self, stream, start: float):
        self.stream, self.start, self.lines = stream, start, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = ""
        while True:
            ch = self.stream.read(1)
            if not ch:
                break
            if ch in "\r\n":
                if buf.strip():
                    self.lines.append((time.monotonic() - self.start, buf.strip()))
                buf = ""
            else:
                buf += ch

    def text(self) -> str:
        self.thread.join()
        return "\n".join(line for _, line in self.lines)

    def at(self, seconds: float) -> str:
        """The last line written before ``seconds``."""
        before = [line for t, line in self.lines if t <= seconds]
        return before[-1] if before else "(before the first line)"



AUTOFAISS_AVAILABLE = "16G"   # its current_memory_available: it refuses to build unless this exceeds the budget
AUTOFAISS_PINS = ["autofaiss==2.18.0", "pyarrow<18"]   # autofaiss 2.18 pins numpy<2; pyarrow 18+ wants numpy 2

AUTOFAISS_RUN = r"""
import json, sys, time
import numpy as np, faiss
from autofaiss import build_index
emb, out, budget, queries, truth = sys.argv[1:6]
t = time.perf_counter()
build_index(embeddings=emb, index_path=out + "/knn.index", index_infos_path=out + "/infos.json",
            max_index_memory_usage=budget, current_memory_available=sys.argv[6], metric_type="ip", verbose=30)
build_s = time.perf_counter() - t
infos = json.load(open(out + "/infos.json"))
index = faiss.read_index(out + "/knn.index", faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])
q, truth = np.load(queries), np.load(truth)
index.search(q[:10], 10)
t = time.perf_counter()
_, ids = index.search(q, 10)
qps = len(q) / (time.perf_counter() - t)
recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
# at equal recall: the smallest value of its search knob (efSearch or nprobe) reaching imgextract's recall
knob, target, equal = infos["index_param"].split("=")[0], float(sys.argv[7]), None
for value in (2 ** i for i in range(0, 14)):
    faiss.ParameterSpace().set_index_parameter(index, knob, value)
    t = time.perf_counter()
    _, ids = index.search(q, 10)
    at_qps = len(q) / (time.perf_counter() - t)
    at_recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
    if at_recall >= target:
        equal = {"knob": f"{knob}={value}", "recall": at_recall, "qps": at_qps}
        break
print(json.dumps({"build_s": build_s, "factory": infos["index_key"], "params": infos["index_param"],
                  "recall": recall, "qps": qps, "equal": equal}))
"""


def autofaiss_python(work: Path) -> Path:
    """A separate venv with autofaiss and what it pins (its numpy < 2 cannot share imgextract's)."""
    venv = work / "autofaiss-venv"
    py = venv / "bin" / "python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *AUTOFAISS_PINS], check=True)
    return py


def bench_autofaiss(work: Path, emb: Path, budget: str, q: np.ndarray, truth: np.ndarray, recall: float) -> dict:
    """autofaiss's build_index on the same img_emb folder, the same budget, queries and exact answers."""
    py = autofaiss_python(work)
    out = work / "autofaiss"
    if out.exists():
        remove_own(out, work)
    out.mkdir()
    np.save(out / "queries.npy", q)
    np.save(out / "truth.npy", truth)
    p = subprocess.Popen([str(py), "-c", AUTOFAISS_RUN, str(emb / "img_emb"), str(out), budget,
                          str(out / "queries.npy"), str(out / "truth.npy"), AUTOFAISS_AVAILABLE, str(recall)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    mem = PeakAnon(p.pid)
    stdout, err = p.communicate()
    mem.stop()
    if p.returncode:
        raise SystemExit(f"autofaiss failed:\n{err[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "anon": mem.peak, "hwm": mem.hwm}


def bench_vectors(work: Path, n: int, budget: str, autofaiss: bool = False, dim: int = 512) -> None:
    from imgextract.index.choice import exact_top
    from imgextract.index.store import open_index
    from imgextract.demo.tiny import save_tiny_clip
    emb = work / f"emb-{n}x{dim}"
    if not emb.is_dir():
        t = time.perf_counter()
        write_vectors(emb, n, dim)
        print(f"wrote {n:,} vectors in {time.perf_counter() - t:.0f} s")
    clip = save_tiny_clip(work / f"clip{dim}", embed_dim=dim)  # names the model that "made" the vectors
    env = {**os.environ, "IMGEXTRACT_INDEX_DIR": str(work / "ix"), "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    p = subprocess.Popen([str(EXE), "index", "build", str(emb), "--name", "bench", "--embeddings", "--embedder",
                          f"clip:{clip}", "--max-memory", budget, "--overwrite"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    anon = PeakAnon(p.pid)
    lines = Lines(p.stderr, anon.start)
    p.stdout.read()
    p.wait()
    err = lines.text()
    build_s = time.perf_counter() - t
    anon.stop()
    if p.returncode:
        raise SystemExit(err[-3000:])
    peak = anon.hwm or resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    limit = parse_memory(budget)
    os.environ["IMGEXTRACT_INDEX_DIR"] = str(work / "ix")
    idx = open_index("bench", gpu="off")
    files = sum(f.stat().st_size for f in (work / "ix" / "bench").iterdir() if f.is_file())
    rng = np.random.default_rng(7)
    q = np.asarray(idx.vectors[np.sort(rng.choice(n, 1000, replace=False))], np.float32)
    q += rng.normal(0, 0.05, q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t = time.perf_counter()
    _, ids = idx.search(q, 10)
    approx_qps = len(q) / (time.perf_counter() - t)
    t = time.perf_counter()
    truth = exact_top(idx.vectors, q, 10)
    exact_qps = len(q) / (time.perf_counter() - t)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
    rec = idx.embedder
    print(f"vectors         : {n:,} x {dim} float16, --max-memory {budget}")
    print(f"chosen factory  : {rec['faiss_factory']} {rec.get('faiss_params')} (recall@10 at build "
          f"{rec.get('recall_at_10'):.3f})")
    print(f"build           : {build_s:.0f} s, index folder {files / 2**30:.2f} GiB")
    print(f"memory          : peak anonymous {anon.peak / 2**30:.2f} GiB (sampled RssAnon) vs --max-memory "
          f"{limit / 2**30:.2f} GiB: {'within' if anon.peak <= limit else 'OVER'} the budget; peak RSS "
          f"{peak / 2**30:.2f} GiB (VmHWM; counts memory-mapped file pages too)")
    print(f"peak reached    : {anon.peak_at:.0f} s into the build, during: {lines.at(anon.peak_at)[:160]}")
    print(f"search          : recall@10 {recall:.3f} vs exact (goal >= 0.95); {approx_qps:.0f} queries/s with "
          f"re-rank vs {exact_qps:.0f} queries/s exact (brute force over vectors.f16): {approx_qps / exact_qps:.1f}x")
    if autofaiss:
        a = bench_autofaiss(work, emb, budget, q, truth, recall)
        e = a["equal"]
        print(f"autofaiss 2.18  : {a['factory']} ({a['params']}), same vectors, budget and queries: build "
              f"{a['build_s']:.0f} s (imgextract {build_s:.0f} s); peak anonymous {a['anon'] / 2**30:.2f} GiB "
              f"(imgextract {anon.peak / 2**30:.2f}), peak RSS {a['hwm'] / 2**30:.2f} GiB (imgextract "
              f"{peak / 2**30:.2f}); recall@10 {a['recall']:.3f} (imgextract {recall:.3f}); {a['qps']:.0f} queries/s "
              f"(imgextract {approx_qps:.0f}: {approx_qps / a['qps']:.2f}x)")
        print(f"at equal recall : autofaiss at {e['knob']}: recall@10 {e['recall']:.3f}, {e['qps']:.0f} queries/s; "
              f"imgextract {approx_qps:.0f} at {recall:.3f}: {approx_qps / e['qps']:.2f}x (goal >= 1)" if e else
              f"at equal recall : autofaiss's index does not reach recall {recall:.3f} at any setting tried")


def write_tars(folder: Path, n: int, per_shard: int = 500, size: int = 256, seed: int = 0) -> list[bytes]:
    import skimage.data
    from sklearn.datasets import load_sample_image
    photos = [Image.fromarray(getattr(skimage.data, k)()).convert("RGB") for k in
              ("astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "camera", "coins")]
    photos += [Image.fromarray(load_sample_image(f)) for f in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    blobs = []
    for s, start in enumerate(range(0, n, per_shard)):
        rows = []
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tf:
            for i in range(start, min(start + per_shard, n)):
                im = photos[i % len(photos)]
                c = int(min(im.size) * rng.uniform(0.3, 1.0))
                x, y = rng.integers(0, im.width - c + 1), rng.integers(0, im.height - c + 1)
                buf = io.BytesIO()
                im.crop((x, y, x + c, y + c)).resize((size, size), Image.BICUBIC).save(buf, "JPEG", quality=90)
                data = buf.getvalue()
                blobs.append(data)
                key = f"{i:09d}"
                for name, payload in ((f"{key}.jpg", data), (f"{key}.txt", f"image {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
                rows.append({"url": f"https://example.invalid/{i}.jpg", "caption": f"image {i}", "key": key,
                             "status": "success", "error_message": None, "width": size, "height": size,
                             "LICENSE": "cc-by"})
        pd.DataFrame(rows).to_parquet(folder / f"{s:05d}.parquet")
        (folder / f"{s:05d}_stats.json").write_text(json.dumps({"count": len(rows), "successes": len(rows)}))
    return blobs


def bench_ingest(work: Path, n: int, size: int, rounds: int = 2) -> None:
    shards = work / "shards"
    if shards.is_dir():
        remove_own(shards, work)
    blobs = write_tars(shards, n, size=size)
    cores = os.cpu_count() or 1

    def decode(data: bytes) -> None:
        Image.open(io.BytesIO(data)).convert("RGB").load()

    def floor() -> float:
        t = time.perf_counter()
        with ThreadPoolExecutor(cores) as pool:
            list(pool.map(decode, blobs))
        return n / (time.perf_counter() - t)

    floor()  # warm
    from imgextract.app.commands import build_index
    from imgextract.index.store import open_index
    os.environ["IMGEXTRACT_INDEX_DIR"] = str(work / "ix")
    # the machine's speed drifts between runs (a shared host): each build is bracketed by a floor run
    # before and after it, and its ratio is to their mean; the two forms alternate over the rounds
    forms = [("thumbnails (default)", "ingest", {}),
             ("--no-thumbs (the 10^8-10^9 plan)", "ingest-bare", {"thumb_sizes": None})]
    got: dict[str, list[float]] = {label: [] for label, _, _ in forms}
    for r in range(rounds):
        for label, name, options in (forms if r % 2 == 0 else forms[::-1]):
            before = floor()
            t = time.perf_counter()
            build_index(shards, name, "pixel", overwrite=True, progress=False, **options)
            rate = n / (time.perf_counter() - t)
            after = floor()
            got[label].append(rate / ((before + after) / 2))
            print(f"ingest          : {n} JPEGs ({size} px) from webdataset tars, {label}: index build {rate:.0f} "
                  f"images/s; decode-only floor on {cores} cores {before:.0f} before, {after:.0f} after; "
                  f"build / floor = {got[label][-1]:.2f}", flush=True)
    a, b = open_index("ingest"), open_index("ingest-bare")
    same = bool(np.array_equal(np.asarray(a.vectors), np.asarray(b.vectors))
                and a.table["sha256"].equals(b.table["sha256"]))
    for label, ratios in got.items():
        print(f"ingest          : {label}: build / floor median {float(np.median(ratios)):.2f} over {rounds} runs "
              "(goal >= 0.50)")
    print(f"ingest          : both indexes hold the same rows and vectors: {same}")
    if not same:
        raise SystemExit("MISMATCH: the index built without thumbnails differs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors (0: skip)")
    ap.add_argument("--max-memory", default="4G")
    ap.add_argument("--dim", type=int, default=512, help="vector dimension (768: ViT-L-14's)")
    ap.add_argument("--ingest", type=int, default=10000, help="JPEGs in tars for the ingest comparison (0: skip)")
    ap.add_argument("--ingest-rounds", type=int, default=2, help="builds of each form, alternated")
    ap.add_argument("--ingest-size", type=int, default=512, help="side of those JPEGs (img2dataset --image_size)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--autofaiss", action="store_true",
                    help="also build autofaiss's index of the same vectors (a venv in the work folder, pinned)")
    args = ap.parse_args()
    work = bench_workdir(args.workdir, "imgextract-bench-index-")
    try:
        if args.ingest:
            bench_ingest(work, args.ingest, args.ingest_size, args.ingest_rounds)
        if args.n:
            bench_vectors(work, args.n, args.max_memory, args.autofaiss, args.dim)
    finally:
        if args.workdir is None:
            remove_own(work, work)


if __name__ == "__main__":
    main()
