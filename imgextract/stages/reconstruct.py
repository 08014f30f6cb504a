"""Reconstruction: can *any* input make the model draw this image?

Cooper & Grimmelmann separate *regurgitation* (an ordinary prompt produces the copy) from
*reconstruction* (the copy can be drawn out by any means). The search here is shaped like textual
inversion: ``tokens`` free vectors replace the first positions (after the start token) of the empty
prompt's text-encoder output, and are fitted for ``steps`` Adam steps to the image's denoising loss,
the model's own training objective (ε, v or x0, from its scheduler's ``prediction_type``; the
flow-matching velocity for SD3 and Flux; SDXL's pooled and size embeddings held at the empty
prompt's), over random timesteps and noise, through the family's adapter (``models/denoisers``). The fitted conditioning then draws ``samples`` images from fresh seeds
(never the search's noise), each judged against the image with the copy verdict (``copies.judge``).

A search that can reconstruct anything proves nothing. :func:`null_rate` runs the same search, with
the same budget and verdict, on calibration images the model never saw; a work is called
reconstructable only with that rate reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator

from PIL import Image

from imgextract import copies
from imgextract.distance import to_uint8
from imgextract.errors import InputError
from imgextract.models.denoisers import Cond, denoiser_of
from imgextract.models.pipelines import LoadedModel
from imgextract.progress import Step
from imgextract.stages.generate import sample_seed
from imgextract.stages.settings import Budget
from imgextract.stats import wilson_ci

EVAL_DRAWS = 16   # fixed (timestep, noise) draws on which the loss is measured before and after the search


@dataclass
class Attempt:
    """One search's outcome: the best sample's verdict, every sample's seed, the loss before and after."""

    reconstructed: bool
    kind: str
    share: float
    seed: int | None
    seeds: list[int]
    shares: list[float]
    loss_first: float
    loss_last: float
    images: list[Image.Image]

    def record(self) -> dict:
        return {"reconstructed": self.reconstructed, "kind": self.kind, "share": round(self.share, 4),
                "seed": self.seed, "seeds": self.seeds, "shares": [round(s, 4) for s in self.shares],
                "loss_first": round(self.loss_first, 6), "loss_last": round(self.loss_last, 6)}


def fit_conditioning(loaded: LoadedModel, image: Image.Image, budget: Budget, size: tuple[int, int],
                     tag: str) -> Generator[Step, None, tuple[Cond, float, float]]:
    """Fit the free vectors to the image's denoising loss; returns (conditioning, loss before, loss after),
    both measured on the same fixed draws.

    ``tag`` names the image in the seed of the search's noise, so each image's search is repeatable."""
    import torch

    den = denoiser_of(loaded, "check --reconstruct")
    base = den.empty()
    if budget.tokens > den.free_room(base):
        raise InputError(f"reconstruction tokens {budget.tokens} exceed the text encoder's length",
                         "use fewer tokens (4 is the default)")
    gen = torch.Generator("cpu").manual_seed(sample_seed(budget.seed, f"search:{tag}", 0))
    pixels = torch.from_numpy(to_uint8(image, size).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    z0 = den.encode_image(pixels).cpu()
    at = slice(den.free_start, den.free_start + budget.tokens)
    free = base.embeds[:, at].float().clone().requires_grad_(True)
    opt = torch.optim.Adam([free], lr=budget.lr)
    x0 = z0.expand(budget.batch, *z0.shape[1:])

    def loss_of(cond: Cond, t, noise, x0):
        return den.losses(x0, noise, t, cond.expand(len(t)), size).mean()

    # the loss before and after, on one fixed set of draws: comparable, unlike two noisy batches
    held = torch.Generator("cpu").manual_seed(sample_seed(budget.seed, f"measure:{tag}", 0))
    t_eval = den.loss_times(held, EVAL_DRAWS)
    n_eval = torch.randn((EVAL_DRAWS, *z0.shape[1:]), generator=held)
    x_eval = z0.expand(EVAL_DRAWS, *z0.shape[1:])
    with torch.no_grad():
        before = loss_of(base, t_eval, n_eval, x_eval).item()
    module = den.module
    was = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)   # gradients flow to the conditioning only
    losses: list[float] = []
    try:
        with torch.enable_grad():
            for step in range(budget.steps):
                t = den.loss_times(gen, budget.batch)
                noise = torch.randn(x0.shape, generator=gen)
                loss = loss_of(den.with_free(base, free), t, noise, x0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                yield Step("reconstruct", step + 1, budget.steps, "step", f"loss {losses[-1]:.4f}")
    finally:
        for p, g in zip(module.parameters(), was):
            p.requires_grad_(g)
    cond = den.with_free(base, free.detach())
    with torch.no_grad():
        after = loss_of(cond, t_eval, n_eval, x_eval).item()
    return cond, before, after


def draw(loaded: LoadedModel, cond: Cond, seeds: list[int], steps: int, guidance: float,
         size: tuple[int, int]) -> list[Image.Image]:
    """Sample the fitted conditioning, one seeded generator per image (as ``generate.render``)."""
    return denoiser_of(loaded, "check --reconstruct").draw(cond, seeds, steps, guidance, size)


def reconstruct(loaded: LoadedModel, image: Image.Image, budget: Budget, steps: int, guidance: float,
                size: tuple[int, int], tag: str,
                rule: copies.CopyRule = copies.CopyRule()) -> Generator[Step, None, Attempt]:
    """Search, draw ``budget.samples`` fresh samples, judge each against ``image``."""
    cond, first, last = yield from fit_conditioning(loaded, image, budget, size, tag)
    seeds = [sample_seed(budget.seed, f"reconstruct:{tag}", i) for i in range(budget.samples)]
    images = draw(loaded, cond, seeds, steps, guidance, size)
    target = to_uint8(image, size)
    judged = [copies.judge(to_uint8(im), target, rule) for im in images]
    order = {"whole": 2, "portion": 1, "none": 0}
    best = max(range(len(judged)), key=lambda i: (order[judged[i].kind], judged[i].share))
    hit = judged[best].kind != "none"
    return Attempt(hit, judged[best].kind, float(judged[best].share), seeds[best] if hit else None, seeds,
                   [float(j.share) if j.kind != "none" else 0.0 for j in judged], first, last, images)


def null_rate(loaded: LoadedModel, images: list[tuple[str, Image.Image]], budget: Budget, steps: int,
              guidance: float, size: tuple[int, int]) -> Generator[Step, None, dict]:
    """The same search on calibration images the model never saw: how often it 'reconstructs' them."""
    per = []
    for n, (name, im) in enumerate(images):
        attempt = yield from reconstruct(loaded, im, budget, steps, guidance, size, f"null:{name}")
        per.append({"image": name, **attempt.record()})
        yield Step("null calibration", n + 1, len(images), "image")
    hits = sum(p["reconstructed"] for p in per)
    lo, hi = wilson_ci(hits, len(per))
    return {"images": len(per), "reconstructed": hits, "rate": hits / len(per) if per else 0.0,
            "ci_low": lo, "ci_high": hi, "budget": budget.record(), "per_image": per}


def meaning(reconstructed: bool, null: dict) -> str:
    """What the result shows, in words that say what it does not."""
    if null["reconstructed"]:
        return (f"The search also reconstructed {null['reconstructed']} of {null['images']} images the model never "
                "saw: under this budget it can draw images the model did not learn, so a reconstruction here "
                "proves little about this work.")
    if reconstructed:
        return (f"It reconstructed none of the {null['images']} calibration images under the same budget, so the "
                "copy is evidence that the model holds this work; the interval says how sure that null rate is.")
    return ("Not reconstructed under this budget: that does not show the model cannot draw the work "
            "(a larger budget or another search might).")
