"""Triage: rank captions by how likely they are memorized, at a sliver of a full sweep's cost.

Scores per caption, each recorded with the UNet evaluations it spent. The default ranking is
``edge_score``: chosen on a dev toy model and measured on held-out ones by
``scripts/eval_triage.py`` (held-out pooled AUC 0.968; Wen's first-step score 0.977 there, the
attention-entropy score near chance on these toy models):

* ``wen_score`` (Wen et al., ICLR 2024): the norm of the text-conditional minus unconditional
  noise prediction, ‖ε(x_t, c) − ε(x_t, ∅)‖₂ over the latent, averaged over the first
  ``steps`` sampling steps and ``samples`` seeds. Memorized prompts pull hard on the noise
  from the first step. The UNet is called directly (diffusers skips the unconditional pass at
  guidance ≤ 1); x0- and v-predicting models are converted to ε first.
* ``attn_score`` (Ren et al. 2024, cross attention): memorized prompts concentrate the UNet's
  cross-attention on few tokens. Recorded in the *same* UNet calls as Wen's score (no extra
  evaluation): per cross-attention layer, the attention each text position receives, averaged
  over pixels and heads, then over layers, steps and seeds; the score is the negative entropy
  of that distribution over the prompt's positions after the start token (higher = more
  concentrated). ``attn_end`` is the share on the end-of-text and padding positions (Chen et
  al. 2025 look at the end token's attention), kept as a column for evaluation.
* ``guide_score`` (after Asthana & Belagiannis, ICLR 2026: the guidance's magnitude *and direction*
  on pure noise, no denoising step): the guidance g_i = ε(x_T, c) − ε(x_T, ∅) of each seed at the
  first step, where x_T is pure noise; the score is ‖mean_i g_i‖, large only when the guidance is
  both strong and points the same way whatever the noise (a memorized prompt pulls every seed
  toward one image; an ordinary prompt's pulls differ and cancel). ``guide_agreement`` =
  ‖mean g‖ / mean ‖g‖ (1: every seed pulled the same way) is kept for evaluation. The calls are
  Wen's first-step calls: asking for both costs Wen's.
* ``mid_score`` (after the 2026 membership finding that a rectified flow's leakage peaks at the middle of
  the flow, not at its ends): Wen's difference at the middle of the schedule, at the point the first step's
  guided prediction implies (its clean latents noised again with the seed's own noise); 2 × ``samples``
  evaluations more than Wen's. Measured for every family, in its own space.
* ``edge_score`` (Webster 2023, black-box): ``samples`` seeds drawn with a single sampling
  step; Sobel edge magnitude of each image, binarised at its mean + one std, averaged across
  seeds into an agreement map; the score is the mean agreement over the pixels that are an
  edge in at least one seed (1.0 = every seed drew the same edges, about 1/samples = none).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Generator

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.models.denoisers import denoiser_of
from imgextract.models.pipelines import LoadedModel, native_size
from imgextract.progress import Step
from imgextract.stages.generate import render, sample_seed
from imgextract.stages.settings import TriageParams


def params_of_run(run: Path, params: TriageParams) -> TriageParams:
    """Triage measures the model as the audit samples it: guidance, schedule length and sampler from a run's
    run.json (``steps`` and ``samples`` stay triage's own)."""
    if not rundir.is_run_dir(Path(run)):
        raise InputError(f"--run {run} is not an imgextract run folder (no run.json)",
                         "point at the folder `imgextract generate` or `run` wrote")
    s = rundir.read_json(Path(run) / rundir.RUN_JSON)["sampling"]
    return replace(params, guidance=float(s["guidance"]), schedule_steps=int(s["steps"]),
                   scheduler=str(s["scheduler"]), run=str(Path(run).resolve()),
                   steps=min(params.steps, int(s["steps"])))


def attention_features(token_attention, start, prompt) -> tuple[float, float]:
    """(negative entropy over the positions after the start tokens, share on the end token and padding)
    of one caption's mean attention distribution over text positions; ``start`` and ``prompt`` are the
    masks :meth:`Denoiser.text_positions` gives (a family without start tokens has none)."""
    a = np.asarray(token_attention, dtype=np.float64)
    rest = ~np.asarray(start, bool)
    p = a[rest] / a[rest].sum()
    entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
    return -entropy, float(p[~np.asarray(prompt, bool)[rest]].sum())


def wen_score(loaded: LoadedModel, caption: str, caption_id: str, params: TriageParams,
              size: tuple[int, int], attention: list | None = None,
              first_guidance: list | None = None, measured: dict | None = None,
              middle: dict | None = None) -> tuple[float, int]:
    """(mean ‖pred_c − pred_∅‖ over steps and seeds, denoiser evaluations spent), the predictions in the
    family's score space (:meth:`Denoiser.score_space`: ε for the noise-predicting families, the velocity
    for flow matching; for guidance-distilled Flux ∅ is the empty prompt under the embedded guidance).

    With ``attention`` (a list), the conditional half's attention per text position is appended to it,
    one tensor per text-carrying layer and step (:meth:`Denoiser.text_attention`: cross-attention, or the
    image tokens' attention on the text tokens of a joint attention). With
    ``first_guidance`` (a list), each seed's pred_c − pred_∅ at the first step (on pure noise) is
    appended, flattened, for :func:`guidance_features`. ``measured`` (a dict) receives the score's space
    and the timesteps it was measured at (the denoiser's own values: 0-1000 steps or σ·1000). ``middle`` (a
    dict) receives the same difference at the middle of the schedule (``score``, ``timestep``), where a
    rectified flow's membership leakage peaks: the first step's guided prediction implies clean latents,
    which are noised again with the seed's own noise to the middle timestep (:meth:`Denoiser.jump`),
    2 × samples more evaluations."""
    import torch
    den = denoiser_of(loaded, "the noise scores (wen, attn, guide)")
    n = params.samples
    seeds = [sample_seed(params.seed, caption_id, i) for i in range(n)]
    from contextlib import nullcontext
    recorded: list = []
    with torch.no_grad(), (den.text_attention(recorded, n) if attention is not None else nullcontext()):
        cond, uncond = den.encode([caption] * n), den.unconditional(n)
        sched = den.scheduler()
        timesteps = den.set_timesteps(sched, params.schedule_steps, size)
        latents = den.noise(seeds, size, sched)
        norms = []
        if measured is not None:
            measured.update(space=den.score_parameterisation,
                            timesteps=[round(float(t), 3) for t in timesteps[:params.steps]])
        for t in timesteps[:params.steps]:
            x = den.model_input(sched, latents, t)
            pc, pu = den.pair(x, t, cond, uncond, size, params.guidance)
            diff = den.score_space(pc, x, t, sched) - den.score_space(pu, x, t, sched)
            if first_guidance is not None and not norms:
                first_guidance.extend(diff.flatten(1).float().cpu().numpy())
            norms.append(diff.flatten(1).norm(dim=1).float().cpu().numpy())
            if len(norms) == 1:   # the first step: where the jump to the middle starts
                start = (x, t, den.combine(pc, pu, params.guidance))
            latents = den.step(sched, den.combine(pc, pu, params.guidance), t, latents)
        if middle is not None:
            unit = den.noise(seeds, size, sched) / den.init_sigma(sched)
            t_mid = timesteps[len(timesteps) // 2]
            x_mid = den.jump(sched, *start, unit, t_mid)
            pc, pu = den.pair(x_mid, t_mid, cond, uncond, size, params.guidance)
            diff = den.score_space(pc, x_mid, t_mid, sched) - den.score_space(pu, x_mid, t_mid, sched)
            middle.update(score=float(diff.flatten(1).norm(dim=1).float().mean()), timestep=round(float(t_mid), 3))
    if attention is not None:
        attention.extend(recorded)   # the conditional rows of each text-carrying layer's calls
    return float(np.mean(norms)), 2 * n * (params.steps + (middle is not None))


def guidance_features(vectors: list) -> tuple[float, float]:
    """(‖mean g‖, ‖mean g‖ / mean ‖g‖) of the seeds' first-step guidance vectors."""
    g = np.asarray(vectors, dtype=np.float64)
    mean_norm = float(np.linalg.norm(g, axis=1).mean())
    consistent = float(np.linalg.norm(g.mean(axis=0)))
    return consistent, consistent / mean_norm if mean_norm > 0 else 0.0


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
    prompts = [caption] * params.samples
    if loaded.family.min_steps > 1:   # its pipeline cannot take one step: the adapter draws what it would
        images = denoiser_of(loaded, "the edge score").images(prompts, seeds, 1, params.guidance, size)
    else:
        images = render(loaded, prompts, seeds, 1, params.guidance, size)
    evals = params.samples * (2 if params.guidance > 1 else 1)
    return edge_consistency(images), evals


METHODS = ("wen", "attn", "guide", "mid", "edge")
SCORE_OF = {"wen": "wen_score", "attn": "attn_score", "guide": "guide_score", "mid": "mid_score",
            "edge": "edge_score"}
# The default ranking, chosen on a dev toy model by scripts/eval_triage.py and then measured on
# toy models it never saw (docs/research.md); `imgextract triage` prints both with every ranking.
DEFAULT_METHOD = "edge"
DEFAULT_EVIDENCE = ("held-out pooled ROC AUC 0.968 [95% CI 0.916, 0.999] on 3 toy models not used to choose it, "
                    "0.986 with a 4th model's 232 negatives added (scripts/eval_triage.py; docs/research.md)")


def triage(loaded: LoadedModel, captions: pd.DataFrame, params: TriageParams,
           methods: tuple[str, ...] = ("wen", "edge"), sort_by: str | None = None) -> pd.DataFrame:
    """One row per caption: caption, the scores asked for, unet_evals, seconds (sorted by ``sort_by``,
    default the first method's score). ``attn`` and ``guide`` share Wen's UNet calls."""
    from imgextract.progress import drain
    return drain(score_captions(loaded, captions, params, methods, sort_by))


def score_captions(loaded: LoadedModel, captions: pd.DataFrame, params: TriageParams,
                   methods: tuple[str, ...] = ("wen", "edge"),
                   sort_by: str | None = None) -> Generator[Step, None, pd.DataFrame]:
    """:func:`triage` as a stage: yields a step per caption, returns the table."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"triage methods {','.join(methods) or '(none)'}", f"use some of {', '.join(METHODS)}")
    size = native_size(loaded.pipe, loaded.family)
    rows = []
    for cid, cap in zip(captions["caption_id"], captions["caption"]):
        row = {"caption_id": str(cid), "caption": cap, "wen_score": None, "attn_score": None, "attn_end": None,
               "guide_score": None, "guide_agreement": None, "mid_score": None, "edge_score": None, "unet_evals": 0}
        t0 = time.perf_counter()
        if {"wen", "attn", "guide", "mid"} & set(methods):
            attention = [] if "attn" in methods else None
            first = [] if "guide" in methods else None
            # the guidance score alone needs only the first step's calls
            alone = not ("wen" in methods or "attn" in methods)
            measured: dict = {}
            middle: dict | None = {} if "mid" in methods else None
            wen, evals = wen_score(loaded, cap, str(cid), replace(params, steps=1) if alone else params, size,
                                   attention, first, measured, middle)
            if middle is not None:
                row["mid_score"], row["mid_timestep"] = middle["score"], middle["timestep"]
            row["score_space"], row["score_timesteps"] = measured["space"], measured["timesteps"]
            if "wen" in methods:
                row["wen_score"] = wen
            if attention is not None:
                mean = mean_attention(attention)
                den = denoiser_of(loaded)
                row["attn_score"], row["attn_end"] = attention_features(mean, *den.text_positions(cap, len(mean)))
            if first is not None:
                row["guide_score"], row["guide_agreement"] = guidance_features(first)
                row["guide_unet_evals"] = 2 * params.samples
            row["unet_evals"] += evals
            row["wen_unet_evals"] = evals
        if "edge" in methods:
            row["edge_score"], evals = edge_score(loaded, cap, str(cid), params, size)
            row["unet_evals"] += evals
            row["edge_unet_evals"] = evals
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        yield Step("triage", len(rows), len(captions), "caption")
    table = pd.DataFrame(rows)
    key = sort_by or (SCORE_OF[DEFAULT_METHOD] if DEFAULT_METHOD in methods else SCORE_OF[methods[0]])
    table["ranked_by"] = key
    return table.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)


def mean_attention(recorded: list) -> np.ndarray:
    """One caption's attention per text position: the mean over layers, steps and seeds of the
    recorded (seeds, tokens) rows."""
    return np.mean([r.numpy().mean(axis=0) for r in recorded], axis=0)


def top_captions(captions, triage_file: Path, top: int, by: str | None = None):
    """The ``top`` captions of a triage file, as a caption table for ``generate``, by the score the
    file was ranked by (its ``ranked_by`` column; Wen's score for files written before it existed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    triage_file = Path(triage_file)
    if not triage_file.is_file():
        raise InputError(f"triage file {triage_file} does not exist", "run `imgextract triage` first")
    scores = pq.read_table(triage_file).to_pandas()
    by = by or (str(scores["ranked_by"].iat[0]) if "ranked_by" in scores.columns and len(scores) else "wen_score")
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
