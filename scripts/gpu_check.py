"""The GPU check: the four places a GPU should carry an audit, measured in one short run.

    python scripts/gpu_check.py                 # full: on a GPU machine (a few minutes)
    python scripts/gpu_check.py --small         # the same code paths at toy sizes (CPU; the tests run it)
    python scripts/gpu_check.py --json out.json # the figures as JSON too

1. **Generation**: Stable Diffusion 1.5's real architecture (random weights, nothing downloaded,
   as ``bench_generate.py`` builds it) at 512 px, 50 steps, fp16, batch 8, drawn the way a sweep
   draws (``stages.generate.render``: one seeded generator per image, then PNG bytes with
   provenance). Prints images/s and the UNet's share of wall time (``UnetClock``, synchronised).
   Goal on a GPU: the UNet ≥ 90% of the wall time.
2. **Embedding**: open_clip ViT-L/14 (random weights) through imgextract's ``ClipEmbedder``,
   preprocessing included, in images/s.
3. **Search**: 10^6 × 768 normalised vectors, exact inner product, on faiss-gpu when the
   installed faiss has GPUs (else on the CPU, and it says so), in queries/s.
4. **Clique test**: pairwise tiled L2 of 500 × 512 px images (``stages.cliques``), on torch
   (on the GPU when CUDA is present, else the same torch code on the CPU), checked against the
   numpy path on a subset.

``--small`` (automatic without CUDA) runs the tiny pipeline, a tiny open_clip, 10^4 vectors
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


def check_generation(device: str, small: bool) -> dict:
    import torch

    from imgextract.stages.generate import UnetClock, png_bytes, render
    if small:
        from imgextract.demo.tiny import assemble_pipeline, tiny_components
        pipe, size, steps, batch, rounds, dtype = assemble_pipeline(tiny_components()), 32, 2, 2, 2, torch.float32
    else:
        from bench_generate import SD15_SCHEDULER, SD15_TEXT, SD15_UNET, SD15_VAE
        from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from imgextract.demo.tiny import write_clip_tokenizer
        import tempfile
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory(prefix="imgextract-gpu-check-") as tok:
            pipe = StableDiffusionPipeline(
                vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
                tokenizer=write_clip_tokenizer(Path(tok)), unet=UNet2DConditionModel(**SD15_UNET),
                scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
                requires_safety_checker=False)
        size, steps, batch, rounds, dtype = 512, 50, 8, 2, torch.float16
    pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    from imgextract.models.families import family_of_pipe
    loaded = types.SimpleNamespace(pipe=pipe, family=family_of_pipe(pipe))
    prompts = [f"a photograph of object {i}" for i in range(batch)]

    def sweep(r: int) -> int:
        images = render(loaded, prompts, [1000 * r + i for i in range(batch)], steps, 7.5, (size, size))
        return sum(len(png_bytes(im, {"caption": p, "seed": 1000 * r + i}))
                   for i, (im, p) in enumerate(zip(images, prompts)))

    sweep(-1)  # warm-up: kernels chosen, memory allocated
    clock = UnetClock(pipe.unet)
    _sync(device)
    t0 = time.perf_counter()
    for r in range(rounds):
        sweep(r)
    _sync(device)
    wall = time.perf_counter() - t0
    n = rounds * batch
    return {"what": "generation", "size": size, "steps": steps, "batch": batch, "dtype": str(dtype).split(".")[-1],
            "images": n, "seconds": wall, "images_per_s": n / wall, "unet_share": clock.seconds / wall,
            "goal_unet_share": 0.90}


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
    args = ap.parse_args()
    device, name = _device()
    small = args.small or device == "cpu"
    print(f"device: {name}{' (small mode: toy sizes, the figures only show the paths run)' if small else ''}")
    figures = {"device": name, "small": small, "checks": []}
    for check in (lambda: check_generation(device, small), lambda: check_embedding(device, small),
                  lambda: check_search(small), lambda: check_cliques(device, small)):
        got = check()
        figures["checks"].append(got)
        print(json.dumps(got, default=float))
    gen = figures["checks"][0]
    print(f"generation: {gen['images_per_s']:.2f} images/s, UNet {gen['unet_share']:.0%} of wall time "
          f"(goal >= 90% on a GPU)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
