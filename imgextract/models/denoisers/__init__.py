"""The denoiser of each registered family, behind one interface.

Triage's noise scores call a model's denoiser directly (the pipeline's ``__call__`` skips the
unconditional pass at guidance <= 1 and never exposes the prediction). Each family encodes prompts,
lays out latents, calls its denoiser and states its training objective differently; an adapter here
hides that, so the stages are written once. Every adapter mirrors its pipeline's own ``__call__``
(noise, timesteps, conditioning, guidance): ``tests/models/test_denoisers.py`` checks that sampling
through the adapter gives the pipeline's own latents for every family.

Parameterisations: ``predict`` returns what the denoiser outputs (epsilon, v or x0 for the UNet families
and PixArt, by the scheduler's ``prediction_type``; the velocity n - x0 for flow matching).
:meth:`Denoiser.score_space` gives the space the noise scores are measured in: epsilon for the
noise-predicting families (v and x0 converted), the velocity itself for flow matching, where
epsilon = x_t + (1 - sigma) v would make the text's pull vanish at the first step (sigma = 1).
"""

from __future__ import annotations

from imgextract.models.denoisers.adapters import (FlowDenoiser, FluxDenoiser, PixArtDenoiser, SD3Denoiser,
                                                  UNetDenoiser, XLDenoiser)
from imgextract.models.denoisers.base import Cond, Denoiser, to_epsilon
from imgextract.models.families import require

__all__ = ["ADAPTERS", "Cond", "Denoiser", "FlowDenoiser", "denoiser_of", "to_epsilon"]

ADAPTERS = {"unet": UNetDenoiser, "sdxl": XLDenoiser, "sd3": SD3Denoiser, "flux": FluxDenoiser,
            "pixart": PixArtDenoiser}


def denoiser_of(loaded, what: str = "this") -> Denoiser:
    """The loaded model's adapter (made once per model); a family without one is refused naming ``what``."""
    require(loaded.family, what, loaded.model)
    den = getattr(loaded, "_denoiser", None)
    if den is None:
        den = ADAPTERS[loaded.family.adapter](loaded)
        loaded._denoiser = den
    return den
