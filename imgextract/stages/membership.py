"""Membership features: what the model alone says about each image, for dataset inference.

A model denoises the images it was trained on better than others of the same kind. Per image, through
the family's adapter and its own training objective (``models/denoisers``):

- ``loss@F``: the denoising loss at the fixed fraction F of the noise schedule, averaged over
  ``noises`` seeded noises (the same noises for every image, so images are compared on equal draws);
- ``ratio``: the log of the mean loss over the mean loss of a lightly shifted copy (a few pixels,
  mirrored at the border). The copy is as hard to denoise as the image but was not trained on, so the
  ratio leaves out how hard the image is, as a reference model would (Carlini et al.'s LiRA idea);
- ``pia``: the loss with the noise the model reads in the clean image itself (PIA, Kong et al. 2024):
  a trained-on image gives a consistent, low answer.

Every loss is taken as a log: losses span orders of magnitude between images. Lower is more
member-like for every feature; ``imgextract.dataset_inference`` combines and tests them.
"""

from __future__ import annotations

from typing import Generator, Iterable

import numpy as np
from PIL import Image

from imgextract.distance import fit
from imgextract.models.denoisers import denoiser_of
from imgextract.models.pipelines import LoadedModel
from imgextract.progress import Step
from imgextract.stages.settings import MembershipSettings


def feature_names(settings: MembershipSettings) -> list[str]:
    return [f"loss@{f:g}" for f in settings.timesteps] + ["ratio", "pia"]


def shifted(image: Image.Image, share: float) -> Image.Image:
    """The image moved right and down by ``share`` of its side, the uncovered edge mirrored in."""
    a = np.asarray(image)
    dy, dx = max(1, round(share * a.shape[0])), max(1, round(share * a.shape[1]))
    padded = np.pad(a, ((dy, 0), (dx, 0), (0, 0)), mode="reflect")
    return Image.fromarray(padded[:a.shape[0], :a.shape[1]])


def noise_seed(seed: int, k: int) -> int:
    """The k-th noise's seed: recorded in membership.json beside the features."""
    return (seed * 1_000_003 + k) % (2 ** 63)


def features(loaded: LoadedModel, images: Iterable[Image.Image], captions: list[str | None],
             settings: MembershipSettings, size: tuple[int, int]) -> Generator[Step, None, np.ndarray]:
    """(n, F) features in :func:`feature_names` order, one row per caption; yields a step per image. ``images``
    may be a generator (one image in memory at a time). A missing caption is the unconditional branch (the
    empty prompt as the family encodes it)."""
    import torch

    den = denoiser_of(loaded, "membership")
    times, pia_t = den.times_at(settings.timesteps), den.times_at([settings.pia_timestep])
    n_t, n_s = len(times), settings.noises
    t_all = times.repeat_interleave(n_s)                       # (T·S,): every timestep with every noise
    n_all = None
    rows = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        base = fit(image.convert("RGB"), size)
        pair = np.stack([np.asarray(base), np.asarray(shifted(base, settings.shift))])
        pixels = torch.from_numpy(pair.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = den.encode_image(pixels).cpu()
        if n_all is None:   # the same seeded noises for every image, in the denoiser's latent layout
            noises = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator("cpu").manual_seed(
                noise_seed(settings.seed, k))) for k in range(n_s)])
            n_all = noises.repeat(n_t, *([1] * (noises.dim() - 1)))
        cond = den.encode([caption]) if caption else den.unconditional(1)
        with torch.no_grad():
            own, moved = (den.losses(z0[None].expand(len(t_all), *z0.shape), n_all, t_all, cond.expand(len(t_all)),
                                     size).view(n_t, n_s).mean(1) for z0 in z)
            pia = den.losses(z[:1], den.implied_noise(z[:1], cond, size), pia_t, cond, size)
        logs = torch.log(own.clamp_min(1e-12))
        ratio = torch.log(own.mean().clamp_min(1e-12)) - torch.log(moved.mean().clamp_min(1e-12))
        rows.append(np.r_[logs.numpy(), ratio.item(), torch.log(pia.clamp_min(1e-12)).item()])
        yield Step("membership", i + 1, len(captions), "image")
    return np.asarray(rows, dtype=np.float64)
