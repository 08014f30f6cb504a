"""The stages' settings as data: how a run samples, how triage measures, what the clique test flags,
what the artist's check draws and how far its reconstruction search goes.

Each class is the one owner of its defaults and checks itself when made, so a bad value is one error
line wherever it came from (an option, a run config, a caller), before any model loads. Light on
purpose (no numpy, no torch): the command line reads these defaults for its options. The scan's own
settings are ``stages.scan.params.ScanParams``; the copy rule's, ``rule.CopyRule``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from imgextract.errors import InputError
from imgextract.rule import CopyRule


@dataclass
class SamplingConfig:
    """How a run samples: the one owner of these defaults (the command line's options read them)."""

    samples: int = 16
    batch_size: int = 8
    steps: int | None = None        # None: the model family's default (families.Family.steps)
    guidance: float | None = None   # None: the model family's default (families.Family.guidance)
    scheduler: str | None = None
    size: tuple[int, int] | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    shard_size: int = 256
    model_config: str | None = None

    def __post_init__(self):
        validate_sampling(self)


def validate_sampling(cfg: SamplingConfig) -> None:
    """Counts positive, sides of 8 pixels or more, guidance not negative (the multiples a size must be, and the
    fewest steps, are the model family's, checked once the model is known: ``generate.resolve_sampling``)."""
    for name in ("samples", "batch_size", "steps", "shard_size"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} is {getattr(cfg, name)}", "give a positive number")
    if cfg.size is not None and min(cfg.size) < 8:   # the multiples a model takes are its family's (check_size)
        raise InputError(f"--size {cfg.size[0]} {cfg.size[1]} is too small",
                         "use sides of 8 pixels or more that the model takes, like 512 512")
    if cfg.guidance is not None and cfg.guidance < 0:
        raise InputError(f"--guidance {cfg.guidance}", "use a guidance scale >= 0, or leave it out for the model family's")


@dataclass(frozen=True)
class TriageParams:
    """How triage measures a model (``imgextract triage``, ``triage-eval``)."""

    steps: int = 1              # sampling steps measured by Wen's score
    samples: int = 4            # seeds per caption, for both scores
    schedule_steps: int = 50    # length of the sampling schedule the first steps come from
    guidance: float = 7.5       # guidance used to advance the latent between measured steps
    seed: int = 0
    scheduler: str | None = None   # the sampler, as the audit samples with it (None: the model's own)
    run: str | None = None         # the run whose settings these are (triage --run), recorded with the ranking

    def __post_init__(self):
        if self.steps < 1 or self.samples < 1 or self.steps > self.schedule_steps:
            raise InputError(f"triage steps={self.steps} samples={self.samples}",
                             "use --steps between 1 and --schedule-steps, and --samples >= 1")


@dataclass(frozen=True)
class CliqueParams:
    """The training-set-free clique test (Carlini et al.): a caption is flagged when ``min_size`` of its
    generations are pairwise within ``delta`` tiled L2."""

    delta: float = CopyRule.threshold   # the same tiled-L2 test, between two generations
    min_size: int = 10
    grid: int = CopyRule.grid
    max_cliques: int = 200_000          # the exact search stops after this many maximal cliques

    def __post_init__(self):
        validate_cliques(self)


def validate_cliques(params: CliqueParams) -> None:
    if params.delta <= 0 or params.min_size < 2:
        raise InputError(f"clique parameters delta={params.delta} min_size={params.min_size}",
                         "use a positive --delta and --min-size of at least 2")


MAX_STEPS = 100_000   # the largest count a reconstruction budget may name


@dataclass(frozen=True)
class Budget:
    """One reconstruction search's fixed budget: what the null rate is measured under, recorded with every result."""

    steps: int = 150       # Adam steps on the conditioning
    batch: int = 4         # (timestep, noise) draws per step
    tokens: int = 4        # free conditioning vectors
    lr: float = 0.05
    samples: int = 8       # fresh-seed samples drawn from the fitted conditioning
    seed: int = 0

    def __post_init__(self):
        validate_budget(self)

    def record(self) -> dict:
        return asdict(self)


def validate_budget(b: Budget) -> None:
    for name in ("steps", "batch", "tokens", "samples"):
        v = getattr(b, name)
        if not 1 <= v <= MAX_STEPS:
            raise InputError(f"reconstruction {name} is {v}", f"give a whole number from 1 to {MAX_STEPS}")
    if not b.lr > 0:
        raise InputError(f"reconstruction learning rate {b.lr}", f"give a positive learning rate ({Budget.lr} is the default)")


@dataclass(frozen=True)
class CheckSettings:
    """The artist's check (``imgextract check``): the works' prompts, the samples drawn per work, the training
    index searched, and the reconstruction search. How it samples is a ``SamplingConfig`` beside it."""

    samples: int = 8                    # samples per work under its own prompt (its training captions add up to 3x)
    caption: str | None = None          # one prompt for every work
    captions: Path | None = None        # a table naming each work's caption
    index: str | None = None            # the model's training index: the works' copies in it, their captions first
    reconstruct: bool = False           # search for any input that draws a work no prompt reproduced
    null: Path | None = None            # calibration images the model never saw (the search's null)
    budget: Budget = field(default_factory=Budget)
    descriptor: str | None = None       # sscd:PATH: each work's best SSCD similarity too
    threshold: float = CopyRule.threshold

    def __post_init__(self):
        if self.samples < 1:
            raise InputError(f"--samples {self.samples}", "draw at least one sample per work")
        if self.caption and self.captions:
            raise InputError("both --caption and --captions given", "use one of them")


@dataclass(frozen=True)
class VerifyParams:
    """`labels verify`: seeds drawn per labelled prompt (the label-noise reports count reproductions over 10)."""

    seeds: int = 10

    def __post_init__(self):
        if self.seeds < 1:
            raise InputError(f"--seeds is {self.seeds}", "give a positive number of seeds per prompt")


MIN_WORKS, MIN_REFERENCES = 10, 6   # the fewest images membership tests: below, no split leaves a test


@dataclass(frozen=True)
class MembershipSettings:
    """Dataset inference (``imgextract membership``): the features' fixed draws and the collection test."""

    timesteps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)   # fractions of the noise schedule
    noises: int = 4              # seeded noises per timestep, the same for every image
    pia_timestep: float = 0.2    # where PIA's proximal-initialisation loss is read
    shift: float = 0.0625        # the perturbed copy: moved by this share of its side
    fit_share: float = 0.5       # share of each side that fits the direction; 0 = the prior, no fitting
    null_splits: int = 0         # disjoint halves of the references tested as the null
    captions: bool = True        # condition on captions when every image has one (else the unconditional branch)
    seed: int = 0

    def __post_init__(self):
        if not self.timesteps or any(not 0 < f < 1 for f in self.timesteps):
            raise InputError(f"--timesteps {','.join(map(str, self.timesteps))}",
                             "give fractions of the noise schedule between 0 and 1, like 0.1,0.3")
        if not 0 < self.pia_timestep < 1:
            raise InputError(f"--pia-timestep {self.pia_timestep}", "give a fraction between 0 and 1")
        if self.noises < 1:
            raise InputError(f"--noises {self.noises}", "give a positive number")
        if not 0 <= self.fit_share < 1:
            raise InputError(f"--fit-share {self.fit_share}", "give a share in [0, 1): 0 tests every image on the prior")
        if not 0 < self.shift < 0.5:
            raise InputError(f"--shift {self.shift}", "give a share of the side between 0 and 0.5, like 0.0625")
        if self.null_splits < 0:
            raise InputError(f"--null-splits {self.null_splits}", "give 0 or more")
