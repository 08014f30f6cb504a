"""Benchmark: `imgextract serve` under concurrent clients, at 10^5 and 10^6 index rows.

    python scripts/bench_serve.py --rows 100000,1000000 --clients 1,4,16 --requests 200 --soak 10000

Index: N rows in clip-retrieval's layout (`index build --embeddings`, pixel embedder): bench_index.py's
synthetic clustered vectors, each with the pixels of one of 64 smooth random fields (every row can be
tested, as every LAION row has a URL), the first P replaced by a pixel table of P real photographs
(512 px PNG, URL and licence columns): copies have their training pixels, the rest is search load. The
server runs as users run it (the installed command, 127.0.0.1, defaults); clients on this machine
post 512 px images in bounded loops: near-copies of the indexed photographs (JPEG + noise) and
photographs not in the index, alternating. Printed per (rows, clients): p50/p95/p99 latency,
requests/s, errors, and whether every copy was answered as a copy naming the right training image
and its licence (and every clean image as none). Then a soak: --soak requests at 4 clients on the
largest index, the server's RSS after the first 1,000 requests and at the end.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgextract.demo.photos import photo
from imgextract.folders import remove_own
from workdir import bench_workdir

EXE = Path(sys.executable).parent / "imgextract"
INDEXED = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "clock", "retina",
           "hubble_deep_field", "immunohistochemistry", "text", "colorwheel", "china", "brick"]
FILLERS = 64
CLEAN = ["flower", "grass", "gravel", "cell", "ascent", "aero", "logo", "microaneurysms"]


def square(im: Image.Image, size: int = 512) -> Image.Image:
    s = min(im.size)
    return im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2)) \
        .resize((size, size), Image.LANCZOS)


def near_copy(im: Image.Image, seed: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    a = np.asarray(Image.open(buf).convert("RGB"), np.float32) + np.random.default_rng(seed).normal(0, 3, (512, 512, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def write_index_source(folder: Path, n: int) -> None:
    """N rows: bench_index.py's synthetic clustered vectors (no pixels, no URL: nothing to fetch), the
    first P of them replaced by P photographs with pixels, URL and licence."""
    from bench_index import PART, write_vectors
    from imgextract.models.embedders import load_embedder
    embedder = load_embedder("pixel", "cpu")
    write_vectors(folder, n, d=embedder.dim)
    (folder / "images").mkdir()
    (folder / "filler").mkdir()
    rng = np.random.default_rng(1)
    for i in range(FILLERS):   # every synthetic row has pixels too (as every LAION row has a URL): smooth fields
        field = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(field).resize((512, 512), Image.BICUBIC).save(folder / "filler" / f"{i:02d}.png")
    photos = [square(photo(name)) for name in INDEXED]
    for name, im in zip(INDEXED, photos):
        im.save(folder / "images" / f"{name}.png")
    for part in range(-(-n // PART)):
        meta = folder / "metadata" / f"metadata_{part}.parquet"
        rows = pd.read_parquet(meta).assign(url=None, license=None)
        rows["image_path"] = [f"filler/{int(k) % FILLERS:02d}.png" for k in rows["image_path"]]
        if part == 0:
            emb = folder / "img_emb" / "img_emb_0.npy"
            x = np.load(emb)
            x[: len(photos)] = embedder.embed(photos).astype(np.float16)
            np.save(emb, x)
            p = len(photos)
            rows.loc[: p - 1, "image_path"] = [f"images/{name}.png" for name in INDEXED]
            rows.loc[: p - 1, "caption"] = [f"a photograph of {name}" for name in INDEXED]
            rows.loc[: p - 1, "url"] = [f"https://example.org/{name}.png" for name in INDEXED]
            rows.loc[: p - 1, "license"] = [f"CC BY 4.0 ({name})" for name in INDEXED]
        rows.to_parquet(meta)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Service:
    def __init__(self, index: str, env: dict):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([str(EXE), "serve", "--index", index, "--port", str(self.port)],
                                     env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
        for _ in range(600):                                   # bounded: 120 s
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/healthz")
                self.health = json.loads(c.getresponse().read())
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(self.proc.stderr.read())
                time.sleep(0.2)
        raise SystemExit("the service did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def load(port: int, clients: int, per_client: int, queries: list[tuple[bytes, str | None]]) -> dict:
    """Each client posts ``per_client`` images (bounded) over one keep-alive connection."""
    latencies, errors, wrong = [], [0], [0]
    lock = threading.Lock()

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(per_client):
            data, want = queries[(c * per_client + i) % len(queries)]
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/check", body=data, headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                body = json.loads(r.read())
                ok = r.status == 200
            except (OSError, http.client.HTTPException, ValueError):
                ok, body = False, {}
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t
            right = ok and ((want is None and body["verdict"] == "none") or
                            (want is not None and body["verdict"] != "none" and
                             body["training_image"]["source"] == f"https://example.org/{want}.png" and
                             f"CC BY 4.0 ({want})" in body["notice"]))
            with lock:
                latencies.append(dt)
                errors[0] += not ok
                wrong[0] += ok and not right

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"n": len(lat), "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95), "p99": np.percentile(lat, 99),
            "rps": len(lat) / wall, "errors": errors[0], "wrong": wrong[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=200, help="requests per (rows, clients) run")
    ap.add_argument("--soak", type=int, default=10_000, help="requests of the memory soak (4 clients, largest index)")
    ap.add_argument("--workdir", type=Path, default=None, help="kept when given (its indexes are reused)")
    ap.add_argument("--build-only", action="store_true", help="build the indexes into --workdir, measure nothing")
    args = ap.parse_args()
    work = bench_workdir(args.workdir, "imgextract-bench-serve-")
    env = {"IMGEXTRACT_INDEX_DIR": str(work / "indexes"), "IMGEXTRACT_CACHE": str(work / "cache")}
    queries = []
    for i, name in enumerate(INDEXED):
        queries.append((near_copy(square(photo(name)), i), name))
        clean = CLEAN[i % len(CLEAN)]
        queries.append((near_copy(square(photo(clean)), 100 + i), None))
    print(f"{os.cpu_count()} cores; {len(queries)} distinct 512 px queries (half near-copies of indexed photographs)")
    sizes = [int(x) for x in args.rows.split(",")]
    try:
        run_all(work, env, sizes, args, queries)
    finally:
        if args.workdir is None:
            remove_own(work, work)


def run_all(work: Path, env: dict, sizes: list[int], args, queries: list) -> None:
    for n in sizes:
        name = f"serve-{n}"
        if not (work / "indexes" / name / "index.faiss").is_file():
            src = work / f"src-{n}"
            if not src.is_dir():
                write_index_source(src, n)
            t = time.perf_counter()
            p = subprocess.run([str(EXE), "index", "build", str(src), "--name", name, "--embeddings", "--embedder",
                                "pixel"], env={**os.environ, **env}, capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(p.stderr)
            print(f"index {name}: built in {time.perf_counter() - t:.0f} s")
        if args.build_only:
            continue
        svc = Service(name, env)
        print(f"index {name}: {svc.health['rows']:,} rows; server RSS at start {rss_mb(svc.proc.pid):.0f} MB")
        load(svc.port, 2, 8, queries)                        # warm-up: page cache, thumbnails, lazy imports
        for clients in [int(x) for x in args.clients.split(",")]:
            r = load(svc.port, clients, max(1, args.requests // clients), queries)
            print(f"  {n:>9,} rows, {clients:>2} clients: p50 {r['p50']:6.1f} ms  p95 {r['p95']:6.1f} ms  "
                  f"p99 {r['p99']:6.1f} ms  {r['rps']:6.1f} req/s  errors {r['errors']}  wrong answers {r['wrong']} "
                  f"(of {r['n']})")
        if n == max(sizes) and args.soak:
            first = load(svc.port, 4, 250, queries)
            after_1000 = rss_mb(svc.proc.pid)
            rest = load(svc.port, 4, max(0, args.soak - 1000) // 4, queries)
            end = rss_mb(svc.proc.pid)
            print(f"  soak: {first['n'] + rest['n']:,} requests at 4 clients; RSS after 1,000 {after_1000:.0f} MB, at "
                  f"the end {end:.0f} MB ({(end - after_1000) / after_1000:+.1%}); errors "
                  f"{first['errors'] + rest['errors']}, wrong answers {first['wrong'] + rest['wrong']}; "
                  f"p95 {rest['p95']:.1f} ms")
        svc.stop()


if __name__ == "__main__":
    main()
