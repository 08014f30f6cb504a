"""The settings the command line shows as its options' defaults, from the modules that own them.

The command line imports only :mod:`imgextract.app`; this module hands it the owners' objects so
that no default is written twice, and owns the app's own (``ServeConfig``). Only light modules are
imported here (``imgextract --help`` starts without numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

from imgextract.errors import InputError
from imgextract.demo.settings import ToyConfig
from imgextract.index.settings import BuildSettings, DuplicateParams
from imgextract.rule import CopyRule
from imgextract.stages.scan import ScanParams
from imgextract.stages.settings import (Budget, CheckSettings, CliqueParams, MembershipSettings, SamplingConfig,
                                       TriageParams, VerifyParams)

__all__ = ["Budget", "BuildSettings", "CheckSettings", "CliqueParams", "CopyRule", "DemoSettings", "DuplicateParams",
           "MembershipSettings", "SamplingConfig", "ScanParams", "ServeConfig", "ToyConfig", "TriageParams", "VerifyParams"]


@dataclass(frozen=True)
class DemoSettings:
    """The offline demo (``imgextract demo``): a toy trained for fixed steps (repeatable; about 4 minutes on 2
    cores), then swept and scanned."""

    vae_steps: int = 580
    unet_steps: int = 900
    dit_steps: int = 900    # the transformer toy's steps (--arch dit)
    arch: str = "unet"      # the toy's denoiser: unet or dit (demo.settings.ARCHS)
    spec: str = "100x1,10x4,1x25,1t16"   # Carlini's duplication schedule, and one of Webster's template families
    # (16 members: at this budget a family of 5 is not learned as a template, one of 16 is)
    seed: int = 0
    samples: int = 16      # per training caption
    steps: int = 25        # DDIM steps
    guidance: float = 3.0  # the toy's regeneration holds at 1-3 and degrades at 7.5


@dataclass(frozen=True)
class ServeConfig:
    """The guard service's settings (``imgextract serve``): the scan's test, and the bounds on its load."""

    index: str
    k: int = ScanParams.k
    threshold: float = CopyRule.threshold
    min_share: float = CopyRule.min_share
    workers: int = 2              # checks at once (threads)
    queue: int = 30               # checks waiting beyond those (~0.5 s of work on 2 cores); more gets 503
    max_bytes: int = 20 * 1024 * 1024
    max_batch: int = 16
    api_keys: tuple = ()          # bearer keys; empty: no key asked

    def __post_init__(self):
        """Checked when made, so a bad setting is one error line before the index is opened."""
        for name, value, least in (("--workers", self.workers, 1), ("--queue", self.queue, 0),
                                   ("--max-bytes", self.max_bytes, 1), ("--max-batch", self.max_batch, 1),
                                   ("-k", self.k, 1)):
            if value < least:
                raise InputError(f"{name} {value}", f"give a whole number >= {least}")
        ScanParams(index=self.index, k=self.k, threshold=self.threshold, relative_n=0, min_share=self.min_share)

