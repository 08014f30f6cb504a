"""The toy model's settings as data: the one owner of their defaults (light: the command line reads them).

What needs the images (the spec against the photographs, the size the model takes) is checked by
``demo.toy.training_set``.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgextract.errors import InputError

ARCHS = ("unet", "dit")   # demo.toy_models.TOY_ARCHS: an SD 1-style UNet, an SD3-style transformer


@dataclass
class ToyConfig:
    """The toy memorizing model (``imgextract toy train``): its duplication spec, size and training budget."""

    duplicates: str = "100x1,10x4,1x25"
    size: int = 32
    minutes: float = 4.0
    seed: int = 0
    vae_share: float = 0.45           # part of the time budget spent on the VAE
    vae_steps: int | None = None      # fixed step counts override the time budget (reproducible tests)
    unet_steps: int | None = None
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    caption_dropout: float = 0.1
    checkpoint_every: float = 30.0    # seconds between resumable checkpoints
    arch: str = "unet"                # the denoiser: unet (SD 1's layout) or dit (SD3's MMDiT, rectified flow)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise InputError(f"--arch {self.arch} is not a toy architecture", f"use one of {', '.join(ARCHS)}")
