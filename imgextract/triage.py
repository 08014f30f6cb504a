"""Triage: rank captions by how likely they are memorized, at a sliver of a full sweep's cost.

Two scores per caption, both recorded with the UNet evaluations they spent:

* ``wen_score`` (Wen et al., ICLR 2024): the norm of the text-conditional minus unconditional
  noise prediction, ‖ε(x_t, c) − ε(x_t, ∅)‖₂ over the latent, averaged over the first
  ``steps`` sampling steps and ``samples`` seeds. Memorized prompts pull hard on the noise
  from the first step. The UNet is called directly (diffusers skips the unconditional pass at
  guidance ≤ 1); x0- and v-predicting models are converted to ε first.
* ``edge_score`` (Webster 2023, black-box): ``samples`` seeds drawn with a single sampling
  step; Sobel edge magnitude of each image, binarised at its mean + one std, averaged across
  seeds into an agreement map; the score is the mean agreement over the pixels that are an
  edge in at least one seed (1.0 = every seed drew the same edges, about 1/samples = none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.generate import render, sample_seed
from imgextract.pipelines import LoadedModel, native_size


@dataclass(frozen=True)
class TriageParams:
    steps: int = 1              # sampling steps measured by Wen's score
    samples: int = 4            # seeds per caption, for both scores
    schedule_steps: int = 50    # length of the sampling schedule the first steps come from
    guidance: float = 7.5       # guidance used to advance the latent between measured steps
    seed: int = 0


def _to_epsilon(pred, x_t, t, scheduler):
    """The UNet's output as a noise prediction, whatever the model was trained to predict."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return pred
    a = scheduler.alphas_cumprod.to(x_t.device, x_t.dtype)[t]
    if kind == "sample":
        return (x_t - a.sqrt() * pred) / (1 - a).sqrt()
    if kind == "v_prediction":
        return a.sqrt() * pred + (1 - a).sqrt() * x_t
    raise InputError(f"model predicts '{kind}'", "triage supports epsilon, sample and v_prediction models")


def wen_score(loaded: LoadedModel, caption: str, caption_id: str, params: TriageParams,
              size: tuple[int, int]) -> tuple[float, int]:
    """(mean ‖ε_c − ε_∅‖ over steps and seeds, UNet evaluations spent)."""
    import torch
    pipe = loaded.pipe
    if not hasattr(pipe, "unet") or getattr(pipe.unet.config, "addition_embed_type", None):
        raise InputError(f"{loaded.model}: the text-conditional noise score needs a Stable Diffusion 1.x/2.x "
                         "pipeline", "use --methods edge for this model")
    device = pipe.unet.device
    n = params.samples
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt([caption] * n, device, 1, True, negative_prompt=[""] * n)
        scale = getattr(pipe, "vae_scale_factor", 8)
        shape = (n, pipe.unet.config.in_channels, size[0] // scale, size[1] // scale)
        noise = [torch.randn(shape[1:], generator=torch.Generator("cpu").manual_seed(
            sample_seed(params.seed, caption_id, i))) for i in range(n)]
        sched = pipe.scheduler
        sched.set_timesteps(params.schedule_steps, device=device)
        latents = torch.stack(noise).to(device, cond.dtype) * sched.init_noise_sigma
        norms = []
        for t in sched.timesteps[:params.steps]:
            x = sched.scale_model_input(latents, t)
            both = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([cond, uncond])).sample
            eps_c, eps_u = (_to_epsilon(o, x, t, sched) for o in both.chunk(2))
            norms.append((eps_c - eps_u).flatten(1).norm(dim=1).float().cpu().numpy())
            guided = both.chunk(2)[1] + params.guidance * (both.chunk(2)[0] - both.chunk(2)[1])
            latents = sched.step(guided, t, latents).prev_sample
    return float(np.mean(norms)), 2 * n * params.steps


def edge_consistency(images: list) -> float:
    """Mean agreement of binarised Sobel edge maps over pixels that are an edge in any image."""
    from scipy import ndimage
    maps = []
    for im in images:
        grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        mag = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
        maps.append(mag > mag.mean() + mag.std())
    agree = np.mean(maps, axis=0)
    any_edge = agree > 0
    return float(agree[any_edge].mean()) if any_edge.any() else 0.0


def edge_score(loaded: LoadedModel, caption: str, caption_id: str, params: TriageParams,
               size: tuple[int, int]) -> tuple[float, int]:
    seeds = [sample_seed(params.seed, caption_id, i) for i in range(params.samples)]
    images = render(loaded, [caption] * params.samples, seeds, 1, params.guidance, size)
    evals = params.samples * (2 if params.guidance > 1 else 1)
    return edge_consistency(images), evals


def triage(loaded: LoadedModel, captions: pd.DataFrame, params: TriageParams,
           methods: tuple[str, ...] = ("wen", "edge")) -> pd.DataFrame:
    """One row per caption: caption, wen_score, edge_score, unet_evals, seconds (sorted by wen_score)."""
    if params.steps < 1 or params.samples < 1 or params.steps > params.schedule_steps:
        raise InputError(f"triage steps={params.steps} samples={params.samples}",
                         "use --steps between 1 and --schedule-steps, and --samples >= 1")
    size = native_size(loaded.pipe)
    rows = []
    for cid, cap in zip(captions["caption_id"], captions["caption"]):
        row = {"caption_id": str(cid), "caption": cap, "wen_score": None, "edge_score": None, "unet_evals": 0}
        t0 = time.perf_counter()
        if "wen" in methods:
            row["wen_score"], evals = wen_score(loaded, cap, str(cid), params, size)
            row["unet_evals"] += evals
            row["wen_unet_evals"] = evals
        if "edge" in methods:
            row["edge_score"], evals = edge_score(loaded, cap, str(cid), params, size)
            row["unet_evals"] += evals
            row["edge_unet_evals"] = evals
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    table = pd.DataFrame(rows)
    key = "wen_score" if "wen" in methods else "edge_score"
    return table.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)


def top_captions(captions, triage_file: Path, top: int, by: str = "wen_score"):
    """The ``top`` captions of a triage file, as a caption table for ``generate``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    triage_file = Path(triage_file)
    if not triage_file.is_file():
        raise InputError(f"triage file {triage_file} does not exist", "run `imgextract triage` first")
    scores = pq.read_table(triage_file).to_pandas()
    if by not in scores.columns or scores[by].isna().all():
        raise InputError(f"triage file {triage_file} has no '{by}' scores", "rank by a score it holds")
    if top < 1:
        raise InputError(f"--top {top}", "give a positive number of captions")
    chosen = scores.sort_values(by, ascending=False, kind="stable")["caption_id"].astype(str).head(top)
    table = captions.to_pandas()
    known = set(table["caption_id"])
    missing = [c for c in chosen if c not in known]
    if missing:
        raise InputError(f"triage file {triage_file} names caption ids not in the caption file ({missing[:3]})",
                         "triage the same caption file you generate from")
    order = {c: i for i, c in enumerate(chosen)}
    picked = table[table["caption_id"].isin(order)].copy()
    picked["_o"] = picked["caption_id"].map(order)
    picked = picked.sort_values("_o").drop(columns="_o")
    return pa.Table.from_pandas(picked, schema=captions.schema, preserve_index=False)


def write_triage(table: pd.DataFrame, path: Path, params: TriageParams) -> None:
    table = table.copy()
    for k, v in params.__dict__.items():
        table[f"param_{k}"] = v
    rundir.write_parquet_atomic(path, table)
