"""Benchmark: the sweep (generate + test each shard) on the local engine and on Ray Data.

    python scripts/bench_generate.py                      # SD 1.5's architecture, random weights
    python scripts/bench_generate.py --model PATH_OR_HUB  # any diffusers pipeline

Without --model it builds a pipeline with **Stable Diffusion 1.5's real architecture**
(UNet2DConditionModel, AutoencoderKL and CLIPTextModel from their published config values,
random weights, nothing downloaded; the tokenizer from open_clip's BPE file) and caches it.
Both engines then run the same sweep (same captions, seeds, shards and batches) against a small
index of real photographs, with ``IMGEXTRACT_PROFILE_UNET=1`` so every UNet call is timed.

Printed per engine: images/s, the share of wall time spent inside the UNet (whole call, and
steady state: from the first finished shard to the last, which leaves out Ray's start-up and
the workers' model load), and the batch size chosen. Then it checks that both engines drew
byte-identical samples (CPU) and reached the same verdicts, and prints the UNet's FLOPs per
512 px image so a GPU figure can be estimated where no GPU was measured. On CPU it runs at a
small size and few steps and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

# Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5): the published config values
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 norm_num_groups=32, act_fn="silu", center_input_sample=False, flip_sin_to_cos=True, freq_shift=0)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), act_fn="silu", norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
MARKER = ".imgextract-bench-model"


def build_sd15(out: Path) -> Path:
    """A StableDiffusionPipeline folder with SD 1.5's architecture and random weights (fp16 safetensors)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from imgextract.demo.tiny import write_clip_tokenizer
    if (out / MARKER).is_file():
        return out
    t0 = time.perf_counter()
    torch.manual_seed(0)
    tok_dir = out.with_name(out.name + "-tokenizer")
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
        tokenizer=write_clip_tokenizer(tok_dir), unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    (out / MARKER).write_text("Stable Diffusion 1.5 architecture, random weights, built by bench_generate.py\n")
    n = sum(p.numel() for p in pipe.unet.parameters())
    print(f"built SD 1.5 architecture (UNet {n / 1e6:.0f}M parameters, random weights) in "
          f"{time.perf_counter() - t0:.0f} s: {out}")
    return out


def unet_flops(model: str, size: int) -> float:
    """FLOPs of one UNet call at ``size`` px for one image with classifier-free guidance (batch 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=torch.float32)
    latent = size // 8
    x = torch.zeros(2, unet.config.in_channels, latent, latent)
    ctx = torch.zeros(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, 10, encoder_hidden_states=ctx)
    return float(counter.get_total_flops())


def photos_index(work: Path, size: int) -> Path:
    """A training set of real photographs at the generation size, indexed with `pixel`."""
    from skimage import data as skdata

    from imgextract.app.commands import build_index
    folder = work / "train"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field"]
    for n in names:
        im = Image.fromarray(np.asarray(getattr(skdata, n)())).convert("RGB").resize((size, size))
        im.save(folder / f"{n}.png")
        (folder / f"{n}.txt").write_text(f"a photograph: {n.replace('_', ' ')}")
    build_index(folder, str(work / "index"), "pixel", progress=False)
    return work / "index"


def sweep(engine, model: str, captions: Path, out: Path, index: Path, args, batch: int) -> dict:
    from imgextract.app.commands import run_sweep
    from imgextract.engines import EngineConfig
    from imgextract.stages.generate import SamplingConfig
    from imgextract.stages.scan import ScanParams
    from imgextract.stages.tester import SweepSettings
    cfg = SamplingConfig(samples=args.samples, batch_size=batch, steps=args.steps, guidance=7.5,
                         size=(args.size, args.size), device="auto", shard_size=args.samples * args.captions_per_shard)
    settings = SweepSettings(ScanParams(index=str(index.resolve()), k=3, relative_n=0), None, "all")
    engine_cfg = EngineConfig(kind="local") if engine == "local" else EngineConfig(
        kind="ray", cpus=os.cpu_count(), gpus_per_worker=None)

    t0, start = time.perf_counter(), time.time()
    totals = run_sweep(captions, model, out, cfg, settings, engine_cfg, say=lambda line: None)
    wall = time.perf_counter() - t0
    m = pd.concat([pd.read_parquet(p) for p in sorted((out / "samples").glob("shard-*.parquet"))])
    stamps = sorted(p.stat().st_mtime - start for p in (out / "samples").glob("shard-*.parquet"))
    return {"wall": wall, "unet": totals["unet_s"], "samples": totals["samples"], "manifest": m, "stamps": stamps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a diffusers pipeline (folder, single file or hub id); default: SD 1.5 "
                                    "architecture with random weights")
    ap.add_argument("--size", type=int, help="pixels per side (default 512 on a GPU, 128 on CPU)")
    ap.add_argument("--steps", type=int, help="denoising steps (default 50 on a GPU, 4 on CPU)")
    ap.add_argument("--captions", type=int, default=None, help="captions (default 64 on a GPU, 4 on CPU)")
    ap.add_argument("--samples", type=int, default=None, help="samples per caption (default 8 on a GPU, 2 on CPU)")
    ap.add_argument("--captions-per-shard", type=int, default=2)
    ap.add_argument("--batch-size", type=int, help="default: 16 on a GPU, 2 on CPU")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--workdir", type=Path, help="work folder (default: a fresh temporary one)")
    args = ap.parse_args()

    import torch

    from imgextract.app.demo import cache_root
    from workdir import bench_workdir
    gpu = torch.cuda.is_available()
    args.size = args.size or (512 if gpu else 128)
    args.steps = args.steps or (50 if gpu else 4)
    args.captions = args.captions or (64 if gpu else 4)
    args.samples = args.samples or (8 if gpu else 2)
    batch = args.batch_size or (16 if gpu else 2)
    os.environ["IMGEXTRACT_PROFILE_UNET"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")
    work = bench_workdir(args.workdir, "imgextract-bench-generate-")
    model = args.model or str(build_sd15(cache_root() / "bench-sd15-random"))
    where = (f"GPU ({torch.cuda.get_device_name(0)})" if gpu else
             f"CPU ({os.cpu_count()} cores): a CPU figure at a small size, not a GPU estimate")
    print(f"model {model}\n{where}: {args.captions} captions x {args.samples} samples, {args.size} px, "
          f"{args.steps} steps, batch size {batch}, shards of {args.captions_per_shard} captions")
    captions = work / "captions.txt"
    captions.write_text("".join(f"a photograph of object number {i} on a table\n" for i in range(args.captions)))
    index = photos_index(work, args.size)
    results = {}
    for engine in args.engines.split(","):
        r = sweep(engine, model, captions, work / f"run-{engine}", index, args, batch)
        results[engine] = r
        n, wall = r["samples"], r["wall"]
        first = r["stamps"][0]
        steady = r["stamps"][-1] - first
        per_shard = r["unet"] / max(len(r["stamps"]), 1)
        steady_share = per_shard * (len(r["stamps"]) - 1) / steady if steady > 0 else float("nan")
        print(f"{engine:5s}: {n / wall:7.3f} img/s   wall {wall:7.1f} s   UNet {r['unet']:7.1f} s = "
              f"{100 * r['unet'] / wall:5.1f}% of wall   steady state {100 * steady_share:5.1f}% "
              f"(first of {len(r['stamps'])} shards done at {first:.0f} s)")
    if len(results) == 2:
        a, b = (results[e]["manifest"] for e in ("local", "ray"))
        same = a["sha256"].tolist() == b["sha256"].tolist()
        verdicts = a["memorized"].tolist() == b["memorized"].tolist()
        print(f"checks: samples byte-identical {same}{'' if not gpu else ' (GPU kernels need not be)'}; "
              f"verdicts identical {verdicts}")
    flops = unet_flops(model, 512)
    per_image = flops * 50
    print(f"UNet: {flops / 1e12:.3f} TFLOP per call at 512 px with guidance (batch 2); "
          f"{per_image / 1e12:.1f} TFLOP per image at 50 steps")
    for mfu in (0.3, 0.5):
        rate = 989e12 * mfu / per_image
        print(f"  estimate, H100 bf16 dense 989 TFLOP/s at {int(mfu * 100)}% utilisation: {rate:.1f} img/s, "
              f"{rate * 3600:,.0f} img/hour per GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
