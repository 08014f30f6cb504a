"""Benchmark: release-guard latency against a 100k-image index on this machine's CPU.

    python scripts/bench_guard.py --images 100000 --workdir /tmp/imgextract-guard-bench

Synthesises the index from real photographs (scikit-image, scikit-learn): random crops with
flips and brightness changes saved as 64x64 JPEG files, indexed by `imgextract index build`'s
own code. Queries: re-encoded, noisy, resized copies of indexed images (must be flagged) and
photographs that are not in the pool (must not be). Latency is per image with the index held
open (`Guard`), compared side by side with the 1 s budget.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgextract.app.guard import Guard
from imgextract.app.commands import build_index

POOL = ["astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field", "immunohistochemistry",
        "colorwheel", "logo"]
NOVEL = ["camera", "coins", "moon", "page", "text", "clock"]


def load(name: str) -> Image.Image:
    import skimage.data
    arr = getattr(skimage.data, name)()
    return Image.fromarray(arr).convert("RGB")


def synthesise(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    photos = [load(p) for p in POOL]
    from sklearn.datasets import load_sample_image
    photos += [Image.fromarray(load_sample_image(f)) for f in ("china.jpg", "flower.jpg")]
    for i in range(n):
        im = photos[rng.integers(len(photos))]
        s = int(min(im.size) * rng.uniform(0.15, 0.9))
        x, y = rng.integers(0, im.width - s + 1), rng.integers(0, im.height - s + 1)
        crop = im.crop((x, y, x + s, y + s)).resize((64, 64), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.clip(np.asarray(crop, np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        sub = folder / f"{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(sub / f"{i:06d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/imgextract-guard-bench"))
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args()
    imgs, index = args.workdir / f"images-{args.images}", args.workdir / f"index-{args.images}"
    if not imgs.is_dir():
        t = time.perf_counter()
        synthesise(imgs, args.images)
        print(f"synthesised {args.images} images in {time.perf_counter() - t:.0f} s")
    if not (index / "index.faiss").is_file():
        t = time.perf_counter()
        build_index(imgs, str(index), "pixel", overwrite=True, batch_size=512)
        print(f"indexed in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    guard = Guard(str(index))
    print(f"opened index of {len(guard.index.table)} images in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(1)
    queries = []
    paths = guard.index.table["path"].tolist()
    for i in rng.choice(len(paths), args.queries, replace=False):
        im = Image.open(paths[i]).convert("RGB").resize((256, 256), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        arr = np.asarray(Image.open(buf).convert("RGB"), np.float32) + rng.normal(0, 3, (256, 256, 3))
        queries.append((Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), True))
    for name in NOVEL * (args.queries // len(NOVEL) + 1):
        if sum(not q[1] for q in queries) >= args.queries:
            break
        im = load(name)
        s = int(min(im.size) * rng.uniform(0.5, 1.0))
        queries.append((im.crop((0, 0, s, s)).resize((256, 256)), False))
    guard.check(queries[0][0])  # warm-up
    times, right = [], 0
    for im, expected in queries:
        v = guard.check(im)
        times.append(v.seconds)
        right += v.memorized == expected
    times = np.array(times)
    print(f"{len(queries)} queries ({args.queries} copies, {len(queries) - args.queries} new photographs): "
          f"{right} answered correctly")
    print(f"latency mean {times.mean() * 1000:.0f} ms, p95 {np.percentile(times, 95) * 1000:.0f} ms, "
          f"max {times.max() * 1000:.0f} ms; budget 1000 ms -> max is {times.max():.2f}x the budget")


if __name__ == "__main__":
    main()
