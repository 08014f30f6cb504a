"""The GPU check: the four places a GPU should carry an audit, measured in one short run.

    python scripts/gpu_check.py                 # full: on a GPU machine (a few minutes)
    python scripts/gpu_check.py --small         # the same code paths at toy sizes (CPU; the tests run it)
    python scripts/gpu_check.py --json out.json # the figures as JSON too

1. **Generation, per family**: the real architectures of Stable Diffusion 1.5 (512 px, fp16, batch 8),
   SDXL (1024 px, fp16), SD 3 medium (1024 px, bf16, with T5-XXL) and FLUX.1 dev (1024 px, bf16),
   random weights from their published config values (``architectures.py``, nothing downloaded),
   each at its family's default steps and guidance, drawn the way a sweep draws
   (``stages.generate.render``: one seeded generator per image, then PNG bytes with provenance).
   Prints images/s, the denoiser's share of wall time (``UnetClock``, synchronised) and peak memory.
   Goal on a GPU: the denoiser ≥ 90% of the wall time.
2. **Embedding**: open_clip ViT-L/14 (random weights) through imgextract's ``ClipEmbedder``,
   preprocessing included, in images/s.
3. **Search**: 10^6 × 768 normalised vectors, exact inner product, on faiss-gpu when the
   installed faiss has GPUs (else on the CPU, and it says so), in queries/s.
4. **Clique test**: pairwise tiled L2 of 500 × 512 px images (``stages.cliques``), on torch
   (on the GPU when CUDA is present, else the same torch code on the CPU), checked against the
   numpy path on a subset.

``--small`` (automatic without CUDA) runs each family's tiny build (``demo.families``), a tiny open_clip, 10^4 vectors
and 24 images of 64 px: the figures mean nothing there, but every path runs and is checked.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _device() -> tuple[str, str]:
    import torch
    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", f"CPU ({platform.processor() or platform.machine()})"


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


FAMILIES = ("sd1", "sdxl", "sd3", "flux-dev")   # SD 1.5, SDXL, SD 3 medium, FLUX.1 dev: UNets and transformers


def _peak_memory(device: str) -> dict:
    if device == "cuda":
        import torch
        return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30, "memory_of": "CUDA allocations"}
    import resource
    return {"peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "memory_of": "this process's peak resident set (every check so far)"}


def check_generation(device: str, small: bool, family: str = "sd1") -> dict:
    """One family's real architecture (``architectures.build_full``; ``--small``: its tiny build) drawn the way a
    sweep draws, at its native size, its default steps and guidance, in its usual precision."""
    import gc

    import torch

    from imgextract.models.families import BY_NAME, family_of_pipe
    from imgextract.models.pipelines import native_size
    from imgextract.stages.generate import UnetClock, png_bytes, render
    gc.collect()   # the previous family's pipeline
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if small:
        from imgextract.demo.families import build
        pipe, steps, batch, rounds, dtype = build(family), 2, 2, 2, torch.float32
        pipe = pipe.to(device)
    else:
        from architectures import FULL, build_full
        pipe = build_full(family, device)
        steps, batch, rounds, dtype = BY_NAME[family].steps, FULL[family][3], 2, getattr(torch, FULL[family][2])
    pipe.set_progress_bar_config(disable=True)
    loaded = types.SimpleNamespace(pipe=pipe, family=family_of_pipe(pipe))
    assert loaded.family.name == family, (loaded.family.name, family)
    size = native_size(pipe, loaded.family)
    denoiser = getattr(pipe, loaded.family.denoiser)
    prompts = [f"a photograph of object {i}" for i in range(batch)]
    guidance = loaded.family.guidance

    def sweep(r: int) -> int:
        images = render(loaded, prompts, [1000 * r + i for i in range(batch)], steps, guidance, size)
        assert all(im.size == (size[1], size[0]) for im in images)
        return sum(len(png_bytes(im, {"caption": p, "seed": 1000 * r + i}))
                   for i, (im, p) in enumerate(zip(images, prompts)))

    sweep(-1)  # warm-up: kernels chosen, memory allocated
    clock = UnetClock(denoiser)
    _sync(device)
    t0 = time.perf_counter()
    for r in range(rounds):
        sweep(r)
    _sync(device)
    wall = time.perf_counter() - t0
    n = rounds * batch
    params = sum(p.numel() for p in denoiser.parameters())
    figures = {"what": "generation", "family": family, "denoiser": type(denoiser).__name__,
               "denoiser_parameters": params, "size": list(size), "steps": steps, "guidance": guidance,
               "batch": batch, "dtype": str(dtype).split(".")[-1], "images": n, "seconds": wall,
               "images_per_s": n / wall, "unet_share": clock.seconds / wall, "goal_unet_share": 0.90,
               **_peak_memory(device)}
    return figures   # the pipeline is freed here; the next family's check collects it before it builds


def check_embedding(device: str, small: bool) -> dict:
    from PIL import Image

    from imgextract.demo.photos import photo
    from imgextract.models.embedders import ClipEmbedder, load_embedder
    if small:
        import tempfile
        from imgextract.demo.tiny import save_tiny_clip
        with tempfile.TemporaryDirectory(prefix="imgextract-gpu-check-") as d:
            embedder, batch, rounds = load_embedder(f"clip:{save_tiny_clip(Path(d) / 'clip')}", device), 8, 2
    else:
        embedder, batch, rounds = ClipEmbedder("clip:ViT-L-14", "ViT-L-14", None, device), 64, 4
    base = photo("astronaut").resize((512, 512), Image.BICUBIC)
    images = [base.rotate(i) for i in range(batch)]
    embedder.embed(images)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(rounds):
        vectors = embedder.embed(images)
    _sync(device)
    wall = time.perf_counter() - t0
    assert vectors.shape == (batch, embedder.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    return {"what": "embedding", "model": embedder.model_name if not small else "tiny open_clip",
            "dimension": embedder.dim, "images": batch * rounds, "seconds": wall,
            "images_per_s": batch * rounds / wall}


def check_search(small: bool) -> dict:
    import faiss
    n, d, queries = (10_000, 64, 256) if small else (1_000_000, 768, 10_000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(n, queries, replace=False)] + 0.01 * rng.standard_normal((queries, d), dtype=np.float32)
    index = faiss.IndexFlatIP(d)
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    where = "faiss-gpu" if gpus else "faiss CPU (this faiss has no GPU)"
    if gpus:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(x)
    index.search(q[:16], 10)  # warm-up
    t0 = time.perf_counter()
    _, ids = index.search(q, 10)
    wall = time.perf_counter() - t0
    top = np.argmax(q[:64] @ x.T, axis=1)
    agree = float(np.mean(ids[:64, 0] == top))
    return {"what": "search", "where": where, "vectors": n, "dimension": d, "queries": queries, "seconds": wall,
            "queries_per_s": queries / wall, "top1_agrees_with_numpy": agree}


def check_cliques(device: str, small: bool) -> dict:
    from imgextract.stages.cliques import pairwise_tiled_l2
    from bench_cliques import synthesize
    n, size = (24, 64) if small else (500, 512)
    images = synthesize(n, size)
    _sync(device)
    t0 = time.perf_counter()
    fast = pairwise_tiled_l2(images, device="cuda" if device == "cuda" else "torch")
    _sync(device)
    wall = time.perf_counter() - t0
    sub = min(n, 24)
    reference = pairwise_tiled_l2(images[:sub], device="cpu")
    worst = float(np.max(np.abs(fast[:sub, :sub] - reference)))
    return {"what": "cliques", "where": f"torch on {device}",
            "images": n, "size": size, "pairs": n * (n - 1) // 2, "seconds": wall,
            "pairs_per_s": n * (n - 1) / 2 / wall, "max_difference_vs_numpy": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="toy sizes (automatic without CUDA)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                    help="the families whose generation is measured (default: all four)")
    args = ap.parse_args()
    from imgextract.models.pipelines import quiet_libraries
    quiet_libraries()
    device, name = _device()
    small = args.small or device == "cpu"
    print(f"device: {name}{' (small mode: toy sizes, the figures only show the paths run)' if small else ''}")
    figures = {"device": name, "small": small, "checks": []}
    checks = [lambda f=f: check_generation(device, small, f) for f in args.families]
    for check in checks + [lambda: check_embedding(device, small), lambda: check_search(small),
                           lambda: check_cliques(device, small)]:
        got = check()
        figures["checks"].append(got)
        print(json.dumps(got, default=float), flush=True)
    for gen in figures["checks"][:len(checks)]:
        print(f"generation {gen['family']:9s} {gen['size'][0]}x{gen['size'][1]} {gen['dtype']:9s}: "
              f"{gen['images_per_s']:.2f} images/s, denoiser ({gen['denoiser']}) {gen['unet_share']:.0%} of wall time "
              f"(goal >= 90% on a GPU), peak {gen['peak_memory_gib']:.1f} GiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
