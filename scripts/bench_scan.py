"""Benchmark: `scan` at Stable Diffusion resolution against the decode floor and a plain loop.

    python scripts/bench_scan.py --train 200 --gens 200 --size 512

Data: SIZE×SIZE PNG training images cut from real photographs (scikit-image, scikit-learn:
random crops, flips, brightness), and generations of which about one in eight is a near-copy
of a training image (JPEG re-encode + noise) and the rest are other crops of the same
photographs (hard negatives: same content, not a copy). Index: `pixel`, built by
`index build`'s own code.

Printed per generation, all measured in this run on the same files:
  decode floor  open every generation (PIL decode + RGB), nothing else;
  plain loop    decode (Pillow), imagehash phash+dhash+whash, embed + search, and tiled L2 against
                the top-k candidates decoded from disk: the obvious correct implementation;
  scan          `imgextract scan` with its defaults (whole command: index open, shards,
                matches.parquet, summary.json), divided by the number of generations.
The loop and the scan run on the idle machine in the default environment (BLAS may use every
core), and with a second process keeping one core busy (a loaded machine); in each, --rounds times
alternated, and the figures are the medians (the host's speed drifts by tens of percent between
minutes; every round's rows are checked identical). Then the scan
runs once more with no thumbnail store (thumbnails "on demand": every candidate decoded) to
price the thumbnails.
Then it checks that the scan's whole-copy verdicts equal the loop's (Carlini's test sees only whole
copies; the portions and templates the scan finds besides are counted), that its hashes are the loop's
(imagehash's), and that every `exact` tiled_l2 equals the loop's value (the others are lower
bounds, checked to be ≤ the loop's). The index-build section compares `index build` with the
decode-only floor of the same training files on all cores.

    python scripts/bench_scan.py --workload all --train 100 --gens 60

runs the workload matrix instead: from a base workload (k = 10, generations of 512 px, training images
of 512 px, one generation in eight a copy) one factor varied at a time: k 5 / 40, generations of 256 /
1024 px, training images of mixed sizes and shapes (256-1024 px, square or 4:3), no copies or half
copies. For each, the plain loop (per generation) and the scan's marginal cost per generation (a scan
of all the generations less one of the first third, divided by the difference: the command's fixed
costs left out), idle and with one core busy, and the rows checked: the same candidates, exact
tiled L2 equal to the loop's, bounds never above it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from imgextract import distance
from imgextract.demo.photos import photo
from imgextract.app.commands import build_index
from imgextract.folders import remove_own
from imgextract.index.store import open_index
from workdir import bench_workdir
from imgextract.stages.scan import ScanParams, scan
from imgextract.sources.images import open_rgb


def photos() -> list[Image.Image]:
    return [photo(n) for n in ["astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field",
                               "immunohistochemistry", "camera", "coins", "moon", "page", "clock", "colorwheel",
                               "text", "china", "flower"]]


def crop(im: Image.Image, size: int, rng) -> Image.Image:
    s = int(min(im.size) * rng.uniform(0.35, 1.0))
    x, y = rng.integers(0, im.width - s + 1), rng.integers(0, im.height - s + 1)
    out = im.crop((x, y, x + s, y + s)).resize((size, size), Image.BICUBIC)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.clip(np.asarray(out, np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def near_copy(path: Path, rng) -> Image.Image:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=85)
    arr = np.asarray(Image.open(buf).convert("RGB"), np.float32) + rng.normal(0, 4, (*Image.open(path).size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def synthesise(work: Path, n_train: int, n_gens: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    """The default benchmark's data: training images and generations of ``size``, one generation in eight a copy."""
    return synthesise_workload(work, n_train, n_gens, size, "fixed", 0.125, seed, train_side=size)


WORKLOADS = {   # name: (k, generation side, training sizes "fixed" | "mixed", share of generations that are copies)
    "base": (10, 512, "fixed", 0.125), "k5": (5, 512, "fixed", 0.125), "k40": (40, 512, "fixed", 0.125),
    "gen256": (10, 256, "fixed", 0.125), "gen1024": (10, 1024, "fixed", 0.125),
    "mixed": (10, 512, "mixed", 0.125), "copies0": (10, 512, "fixed", 0.0), "copies50": (10, 512, "fixed", 0.5),
}


def synthesise_workload(work: Path, n_train: int, n_gens: int, gen_side: int, sizes: str, copy_share: float,
                        seed: int = 0, train_side: int = 512) -> tuple[Path, Path]:
    """Training images (``train_side``, or mixed: 256-1024 px, square or 4:3) and generations at ``gen_side``, of
    which ``copy_share`` (every 1/share-th) are near-copies of a training image and the rest other crops of the
    same photographs."""
    rng = np.random.default_rng(seed)
    base = photos()
    train, gens = work / "train", work / "gens"
    train.mkdir(parents=True)
    gens.mkdir()
    for i in range(n_train):
        im = crop(base[i % len(base)], train_side, rng)
        if sizes == "mixed":
            side = int(rng.choice([256, 384, 512, 768, 1024]))
            im = im.resize((side, side * 3 // 4 if rng.random() < 0.5 else side), Image.BICUBIC)
        im.save(train / f"{i:05d}.png")
        (train / f"{i:05d}.txt").write_text(f"training image {i}")
    files = sorted(train.glob("*.png"))
    step = round(1 / copy_share) if copy_share else 0
    for i in range(n_gens):
        im = near_copy(files[rng.integers(len(files))], rng) if step and i % step == 0 else \
            crop(base[rng.integers(len(base))], gen_side, rng)
        im.resize((gen_side, gen_side), Image.BICUBIC).save(gens / f"gen_{i:05d}.png")
    return train, gens


def rows_agree(m: pd.DataFrame, loop: pd.DataFrame) -> tuple[bool, str]:
    """The scan's rows against the loop's: the same candidates, exact tiled L2 equal, bounds never above."""
    both = m.merge(loop, on=["generation_path", "rank"], suffixes=("", "_loop"))
    if not len(both) == len(loop) == len(m):
        return False, f"rows {len(m)} vs loop {len(loop)}"
    ex = both["exact"]
    same_ids = bool((both["train_id"] == both["train_id_loop"]).all())
    diff = float(np.abs(both.loc[ex, "tiled_l2"] - both.loc[ex, "tiled_l2_loop"]).max()) if ex.any() else 0.0
    bounds = bool((both.loc[~ex, "tiled_l2"] <= both.loc[~ex, "tiled_l2_loop"] + 1e-6).all())
    ok = same_ids and diff < 1e-6 and bounds
    return ok, f"candidates {same_ids}, exact |diff| {diff:.0e}, bounds {bounds}"


def workload_matrix(names: list[str], n_train: int, n_gens: int, rounds: int, root: Path) -> None:
    """One table: per workload, loop and scan (marginal) per generation, idle and one core busy, rows checked."""
    print(f"workload matrix: {n_train} training images, {n_gens} generations each; {os.cpu_count()} cores; "
          f"scan = marginal cost per generation ({n_gens - n_gens // 3} more generations), medians of {rounds}")
    print(f"{'workload':9s} {'k':>3s} {'gen px':>6s} {'train':6s} {'copies':>6s} | {'loop ms':>8s} {'scan ms':>8s} "
          f"{'ratio':>6s} | {'busy: loop':>10s} {'scan':>7s} {'ratio':>6s} | rows")
    failed = []
    for name in names:
        k, side, sizes, share = WORKLOADS[name]
        work = root / name
        if not (work / "gens").is_dir():
            synthesise_workload(work, n_train, n_gens, side, sizes, share)
        os.environ["IMGEXTRACT_INDEX_DIR"] = str(work / "indexes")
        build_index(work / "train", "bench", "pixel", overwrite=True, progress=False)
        gen_files = sorted((work / "gens").glob("*.png"))
        few = work / "gens-few"
        if not few.is_dir():
            few.mkdir()
            for f in gen_files[:n_gens // 3]:
                os.link(f, few / f.name)
        figures, checks = [], []
        for loaded in (False, True):
            loops, scans = [], []
            with busy_core() if loaded else contextlib.nullcontext():
                for _ in range(rounds):
                    loop_s, got_loop = plain_loop(gen_files, "bench", k, distance.DEFAULT_THRESHOLD)
                    loops.append(loop_s / len(gen_files) * 1000)
                    times = {}
                    for folder in (few, work / "gens"):
                        out = work / f"scan-{folder.name}"
                        if out.exists():
                            remove_own(out, root)
                        t = time.perf_counter()
                        list(scan(folder, ScanParams(index="bench", k=k), out))
                        times[folder.name] = time.perf_counter() - t
                    scans.append((times["gens"] - times["gens-few"]) / (len(gen_files) - n_gens // 3) * 1000)
                    checks.append(rows_agree(pd.read_parquet(work / "scan-gens" / "matches.parquet"), got_loop))
            figures += [float(np.median(loops)), float(np.median(scans))]
        ok = all(c[0] for c in checks)
        failed += [] if ok else [name]
        li, si, lb, sb = figures
        print(f"{name:9s} {k:3d} {side:6d} {sizes:6s} {share:6.3f} | {li:8.1f} {si:8.1f} {li / si:5.1f}x | {lb:10.1f} "
              f"{sb:7.1f} {lb / sb:5.1f}x | {'identical' if ok else 'DIFFER: ' + checks[0][1]}", flush=True)
    if failed:
        raise SystemExit(f"MISMATCH on {failed}: the scan's rows are not the plain loop's")


def decode_floor(files: list[Path], workers: int) -> float:
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda p: Image.open(p).convert("RGB").load(), files))
    return time.perf_counter() - t


def plain_loop(files: list[Path], index_name: str, k: int, threshold: float) -> tuple[float, pd.DataFrame]:
    """The obvious implementation, one generation at a time, one thread."""
    index = open_index(index_name)
    embedder = index.load_embedder("cpu")
    paths = index.table["path"].tolist()
    rows = []
    t = time.perf_counter()
    for f in files:
        im = Image.open(f).convert("RGB")    # Pillow, as the obvious loop would: the scan's own decoder is measured
        hs = {"phash": str(imagehash.phash(im)), "dhash": str(imagehash.dhash(im)), "whash": str(imagehash.whash(im))}
        sims, ids = index.search(embedder.embed([im]), k)
        gen = distance.to_array(im)
        for rank, tid in enumerate(ids[0]):
            train = distance.to_array(Image.open(paths[tid]).convert("RGB"), (im.height, im.width))
            tl = float(distance.tiled_l2(gen, train))
            rows.append({"generation_path": str(f), "rank": rank, "train_id": int(tid), "tiled_l2": tl,
                         "memorized": tl < threshold, **{f"gen_{n}": h for n, h in hs.items()}})
    return time.perf_counter() - t, pd.DataFrame(rows)


@contextlib.contextmanager
def busy_core(seconds: int = 900):
    """A second process spinning on one core for the block (at most ``seconds``): a loaded machine."""
    spin = subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {seconds}\n"
                             "while time.time() < end: pass"])
    try:
        yield
    finally:
        spin.kill()
        spin.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--gens", type=int, default=200, help="generations (a sweep scans thousands: at 40 the command's "
                    "fixed costs and the host's drift dominate)")
    ap.add_argument("--rounds", type=int, default=3, help="alternated loop and scan runs per condition (medians)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workdir", type=Path, default=None, help="kept when given; a temporary folder otherwise")
    ap.add_argument("--workload", action="append", choices=[*WORKLOADS, "all"],
                    help="run the workload matrix (repeat, or all) instead of the default benchmark")
    args = ap.parse_args()
    work = bench_workdir(args.workdir, "imgextract-bench-scan-")
    if args.workload:
        names = list(WORKLOADS) if "all" in args.workload else args.workload
        try:
            workload_matrix(names, args.train, args.gens, args.rounds, work)
        finally:
            if args.workdir is None:
                remove_own(work, work)
        return
    cores = os.cpu_count() or 1
    try:
        if not (work / "gens").is_dir():
            synthesise(work, args.train, args.gens, args.size)
        train_files = sorted((work / "train").glob("*.png"))
        gen_files = sorted((work / "gens").glob("*.png"))
        os.environ["IMGEXTRACT_INDEX_DIR"] = str(work / "indexes")
        print(f"{len(train_files)} training images, {len(gen_files)} generations, {args.size}x{args.size} PNG; "
              f"{cores} cores")

        decode_floor(train_files, cores)  # warm the page cache for both passes alike
        floor_train = decode_floor(train_files, cores)
        t = time.perf_counter()
        build_index(work / "train", "bench", "pixel", overwrite=True, progress=False)
        build_s = time.perf_counter() - t
        print(f"index build     : {len(train_files) / build_s:7.1f} img/s   decode-only floor on {cores} cores: "
              f"{len(train_files) / floor_train:7.1f} img/s   build / floor = {floor_train / build_s:.2f} "
              "(goal >= 0.50)")

        decode_floor(gen_files, 1)
        floor = decode_floor(gen_files, 1) / len(gen_files)
        print(f"decode floor    : {floor * 1000:7.1f} ms per generation (one core)")
        out = work / "scan-out"
        loop, scan_ms, first, same_rounds = None, 0.0, None, True
        for loaded in (False, True):
            # as users run it: default environment (BLAS threads as the machine has them); then again
            # with a second process keeping one core busy. The machine's speed drifts (a shared host):
            # loop and scan alternate over the rounds and each figure is the median of its rounds
            l_all, s_all, t_all = [], [], []
            with busy_core() if loaded else contextlib.nullcontext():
                for _ in range(args.rounds):
                    loop_s, got_loop = plain_loop(gen_files, "bench", 10, distance.DEFAULT_THRESHOLD)
                    l_all.append(loop_s / len(gen_files) * 1000)
                    if out.exists():
                        remove_own(out, work)
                    t = time.perf_counter()
                    list(scan(work / "gens", ScanParams(index="bench"), out))
                    s_all.append((time.perf_counter() - t) / len(gen_files) * 1000)
                    rows = pd.read_parquet(out / "matches.parquet")
                    first = rows if first is None else first
                    same_rounds = same_rounds and rows.equals(first)
                    t = time.perf_counter()
                    list(scan(work / "gens", ScanParams(index="bench", criterion="tiled"), work / "scan-tiled"))
                    t_all.append((time.perf_counter() - t) / len(gen_files) * 1000)
                    remove_own(work / "scan-tiled", work)
            l_ms, s_ms, t_ms = (float(np.median(v)) for v in (l_all, s_all, t_all))
            how = "one core busy with another process" if loaded else "idle machine, default environment"
            print(f"[{how}; medians of {args.rounds} alternated rounds]")
            print(f"  plain loop      : {l_ms:7.1f} ms per generation (one thread; rounds {', '.join(f'{x:.1f}' for x in l_all)})")
            print(f"  imgextract scan : {s_ms:7.1f} ms per generation (defaults, {cores} cores, whole command; rounds "
                  f"{', '.join(f'{x:.1f}' for x in s_all)})")
            print(f"  scan, tiled     : {t_ms:7.1f} ms per generation (--criterion tiled: Carlini's test alone)")
            print(f"  ratios          : naive / scan = {l_ms / s_ms:.1f}x (goal >= 4)   naive / scan tiled = "
                  f"{l_ms / t_ms:.1f}x   scan / decode = {s_ms / (floor * 1000):.1f}x", flush=True)
            if not loaded:
                loop, scan_ms = got_loop, s_ms   # the idle run is the one the checks compare
        # thumbnails on demand: the same scan with no thumbnail store, every candidate decoded
        bare = open_index("bench")
        bare.thumbs = lambda size: None
        t = time.perf_counter()
        list(scan(work / "gens", ScanParams(index="bench"), work / "scan-bare", index=bare))
        bare_ms = (time.perf_counter() - t) / len(gen_files) * 1000
        same_bare = pd.read_parquet(work / "scan-bare" / "matches.parquet")["copy_kind"].equals(
            pd.read_parquet(out / "matches.parquet")["copy_kind"])
        remove_own(work / "scan-bare", work)
        print(f"no thumbnails   : {bare_ms:7.1f} ms per generation (every candidate decoded) = "
              f"{bare_ms / scan_ms:.1f}x the scan with thumbnails; verdicts equal {same_bare}")

        m = pd.read_parquet(out / "matches.parquet")
        both = m.merge(loop, on=["generation_path", "rank"], suffixes=("", "_loop"))
        assert len(both) == len(loop) == len(m), (len(both), len(loop), len(m))
        same_ids = (both["train_id"] == both["train_id_loop"]).all()
        # the plain loop is Carlini's pixel-aligned test. Where it and the copy verdict differ, the difference must
        # be one the verdict exists for: a look-alike the loop accuses but nothing substantial is copied, or a
        # copy the loop cannot see (registered, a portion, a template). Pixel-aligned whole copies must agree.
        aligned = both["copy_offset"].map(lambda o: list(o)[:2] in ([], [0.0, 0.0]))
        whole = both["copy_kind"] == "whole"
        refused = both["memorized_loop"] & ~both["memorized"]
        verdicts = bool(((whole & aligned) <= both["memorized_loop"]).all()
                        and (both.loc[refused, "copied_share"] < 0.25).all())
        other_kinds = {"look-alikes refused": int(refused.sum()),
                       "registered whole copies": int((whole & ~aligned).sum()),
                       **both.loc[both["copy_kind"].isin(["portion", "template"]), "copy_kind"].value_counts().to_dict()}
        ex = both["exact"]
        # exact values are integer sums (distance.exact_distances); the loop's are float32: equal to ~1e-7
        exact_diff = float(np.abs(both.loc[ex, "tiled_l2"] - both.loc[ex, "tiled_l2_loop"]).max())
        exact_equal = exact_diff < 1e-6
        bounds_ok = (both.loc[~ex, "tiled_l2"] <= both.loc[~ex, "tiled_l2_loop"]).all()
        index = open_index("bench")
        from imgextract import hashes as H
        gen_hashes = {p: H.image_hashes(open_rgb(Path(p))) for p in m["generation_path"].unique()}
        hashes_equal = all(gen_hashes[p][n] == g for p, grp in loop.groupby("generation_path")
                           for n in ("phash", "dhash", "whash") for g in grp[f"gen_{n}"].unique())
        # the index stores no hashes: the scan hashed the copies it found (every memorized row)
        hashed = both["phash_distance"] >= 0
        phash_d = both[hashed].apply(lambda r: imagehash.hex_to_hash(r["gen_phash"]) - imagehash.phash(
            open_rgb(Path(index.table["path"].iat[r["train_id"]]))), axis=1)
        hash_columns = bool((phash_d == both.loc[hashed, "phash_distance"]).all()
                            and (hashed >= both["memorized"]).all())
        print(f"checks          : {int(m['memorized'].sum())} memorized rows, "
              f"{m.loc[m['memorized'], 'generation_path'].nunique()} generations; exact rows {int(ex.sum())} of "
              f"{len(m)}; candidates identical {same_ids}; aligned whole-copy verdicts agree {verdicts} (differences "
              f"the verdict exists for: {other_kinds}); exact tiled_l2 equal "
              f"{exact_equal} (max |diff| {exact_diff:.1e}, float32 rounding of the loop); bounds <= exact {bounds_ok}; hashes bit-identical {hashes_equal and hash_columns}; "
              f"every round's rows identical {same_rounds}")
        if not (same_ids and verdicts and exact_equal and bounds_ok and hashes_equal and hash_columns and same_rounds):
            raise SystemExit("MISMATCH: the fast scan disagrees with the plain loop")
    finally:
        if args.workdir is None:
            remove_own(work, work)


if __name__ == "__main__":
    main()
