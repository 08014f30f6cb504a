"""Benchmark: pairwise tiled L2 among N generations against this machine's GEMM rate and a per-pair loop.

    python scripts/bench_cliques.py --n 500 --size 512

Effective GFLOP/s counts the full product a plain implementation would do, 2·N²·(H·W·3)
multiply-adds, over the wall time; the reference is a 2048² float32 matrix product (numpy,
same BLAS, same threads) measured in this run.

Images are crops of real photographs (scikit-image, scikit-learn) with noise, at SIZE×SIZE.
The per-pair loop runs on a subset and is extrapolated to N(N-1)/2 pairs; both are timed in
this one run and the ratio printed. Peak memory is numpy's (tracemalloc) plus the images.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from PIL import Image

from imgextract import distance
from imgextract.demo.photos import photo
from imgextract.stages.cliques import pairwise_tiled_l2


def photos() -> list[Image.Image]:
    return [photo(n) for n in ["astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field",
                               "immunohistochemistry", "china", "flower"]]


def synthesize(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = photos()
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        im = base[i % len(base)]
        s = int(min(im.size) * rng.uniform(0.5, 1.0))
        x, y = rng.integers(0, im.width - s + 1), rng.integers(0, im.height - s + 1)
        arr = np.asarray(im.crop((x, y, x + s, y + s)).resize((size, size), Image.BILINEAR), np.float32)
        out[i] = np.clip(arr + rng.normal(0, 3, arr.shape), 0, 255).astype(np.uint8)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--loop-subset", type=int, default=30)
    args = ap.parse_args()
    images = synthesize(args.n, args.size)
    print(f"{args.n} images at {args.size}x{args.size}: {images.nbytes / 2**20:.0f} MiB as uint8")
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    reps = 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    gemm = 2 * 2048 ** 3 * reps / (time.perf_counter() - t) / 1e9

    t = time.perf_counter()
    pairwise_tiled_l2(images)  # first call: BLAS buffers and first-touch page faults (slow in VMs)
    cold_s = time.perf_counter() - t
    tracemalloc.start()
    t = time.perf_counter()
    fast = pairwise_tiled_l2(images)
    fast_s = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    m = args.loop_subset
    sub = images[:m].astype(np.float32) / 255
    t = time.perf_counter()
    loop = np.array([[distance.tiled_l2(sub[i], sub[j]) if j > i else 0.0 for j in range(m)] for i in range(m)])
    loop_s = (time.perf_counter() - t) * (args.n * (args.n - 1) / 2) / (m * (m - 1) / 2)
    err = np.abs(np.triu(loop, 1) - np.triu(fast[:m, :m], 1)).max()

    flops = 2 * args.n ** 2 * args.size * args.size * 3
    print(f"matrix products : {fast_s:8.2f} s for {args.n * (args.n - 1) // 2} pairs, "
          f"peak working memory {peak / 2**20:.0f} MiB (+ images); first call {cold_s:.2f} s")
    print(f"throughput      : {flops / fast_s / 1e9:8.1f} GFLOP/s effective; 2048² float32 GEMM {gemm:.1f} GFLOP/s; "
          f"ratio {flops / fast_s / 1e9 / gemm:.2f} (goal >= 0.70)")
    print(f"per-pair loop   : {loop_s:8.1f} s (extrapolated from {m * (m - 1) // 2} pairs)")
    print(f"speed-up        : {loop_s / fast_s:8.1f}x   max |difference| on the subset: {err:.2e}")


if __name__ == "__main__":
    main()
