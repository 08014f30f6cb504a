"""The model family registry, kept as data (open_clip keeps its model configs the same way).

A family says, for one line of text-to-image models, what imgextract needs to know to draw from it,
score it and fit to it: which diffusers pipeline classes it covers and how to tell its variants
apart from their configs, the denoiser component and its training objective, where the native size
comes from, its sampling defaults, the schedulers it accepts, what to turn off in the pipeline call
(PixArt's resolution binning), its denoiser adapter and where its text meets the image in attention. The pipeline acts on the
entry: ``models.pipelines`` (native size, schedulers), ``stages.generate`` (defaults, the call).

A family is told from ``model_index.json`` and the component configs, so a command that needs a
registered family refuses an unregistered pipeline before its weights load.

Adding a family: one ``Family`` entry here, one tiny build in ``demo/families.py``, and its name in
``tests/cli/test_families_cli.py``'s FAMILIES (every command runs on it there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from imgextract.errors import InputError

UNET_SCHEDULERS = ("ddim", "ddpm", "pndm", "euler", "euler-a", "dpm++", "unipc", "lms", "heun")
FLOW_SCHEDULERS = ("flow-euler", "flow-heun")
# short name -> diffusers class; kept beside the families so the registry can check a sampler without loading
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
    "flow-heun": "FlowMatchHeunDiscreteScheduler",
}


@dataclass(frozen=True)
class TextAttention:
    """Where a family's text tokens meet image tokens in attention, for the attention score.

    ``modules``: the attention processors that carry text (the suffix of their names); ``kind``: cross
    (every key is a text token) or joint (text and image tokens attend together); ``text_at``: where
    the text tokens sit in a joint sequence; ``layout``: how the attention kernel gets its tensors
    (batch, heads, sequence, dim or batch, sequence, heads, dim); ``kernel``: the function the
    processor calls, as ``module:name``, intercepted while it runs."""

    modules: str
    kind: str                 # cross | joint
    text_at: str = "all"      # all | first | last
    layout: str = "BHSD"      # BHSD | BSHD
    kernel: str = "torch.nn.functional:scaled_dot_product_attention"


CROSS = TextAttention("attn2.processor", "cross")


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    pipelines: tuple[str, ...]                    # diffusers pipeline classes it covers
    denoiser: str = "unet"                        # the pipeline component that denoises
    objectives: tuple[str, ...] = ("epsilon",)    # training objectives it may have; the scheduler says which
    size_from: str = "denoiser"                   # denoiser: its sample_size x VAE factor; pipeline: default_sample_size x VAE factor
    steps: int = 50                               # default sampling steps
    min_steps: int = 1                            # fewest steps its pipeline's own call can take
    guidance: float = 7.5                         # default guidance (guidance-distilled: the embedded scale)
    schedulers: tuple[str, ...] = UNET_SCHEDULERS
    call: dict = field(default_factory=dict)      # extra pipeline arguments every draw passes
    packing: int = 1                              # latent patches packed per side before the transformer (Flux: 2)
    side_multiple: int = 8                        # what its pipeline's own input check demands of a side (SD 1/2/XL,
                                                  # PixArt: 8 whatever the VAE; SD3, Flux: their latent grid's)
    adapter: str = ""                             # its denoiser adapter (models/denoisers.py ADAPTERS); "": none
    distilled: bool = False                       # guidance-distilled: no unconditional branch when sampling
    attention: TextAttention | None = CROSS       # where its text tokens meet image tokens (the attention score)
    match: dict = field(default_factory=dict)     # "component.key": value the variant's config has
    note: str = ""

    @property
    def registered(self) -> bool:
        return self.name != "unregistered"


FLUX = dict(denoiser="transformer", objectives=("flow",), size_from="pipeline", schedulers=FLOW_SCHEDULERS,
            packing=2, side_multiple=1, adapter="flux", distilled=True,
            attention=TextAttention("attn.processor", "joint", text_at="first", layout="BSHD",
                                    kernel="diffusers.models.transformers.transformer_flux:dispatch_attention_fn"))
PIXART = dict(denoiser="transformer", steps=20, guidance=4.5, call={"use_resolution_binning": False},
              adapter="pixart",
              note="DiT with T5 cross-attention; drawn at the size asked, resolution binning off")
FAMILIES: list[Family] = [   # first match wins: variants before the family they refine
    Family("sd2", "Stable Diffusion 2.x", ("StableDiffusionPipeline",), objectives=("epsilon", "v_prediction"),
           adapter="unet", match={"text_encoder.hidden_act": "gelu"},
           note="OpenCLIP-H text encoder (gelu); 768 px models predict v"),
    Family("sd1", "Stable Diffusion 1.x", ("StableDiffusionPipeline",), objectives=("epsilon", "v_prediction", "sample"),
           adapter="unet", note="CLIP ViT-L/14 text encoder; the toy model is one"),
    Family("sdxl", "Stable Diffusion XL", ("StableDiffusionXLPipeline",), guidance=5.0, adapter="sdxl",
           note="two CLIP text encoders; pooled text and size/crop (text_time) embeddings"),
    Family("sd3", "Stable Diffusion 3 / 3.5", ("StableDiffusion3Pipeline",), denoiser="transformer",
           objectives=("flow",), size_from="pipeline", steps=28, guidance=7.0, schedulers=FLOW_SCHEDULERS,
           side_multiple=1, adapter="sd3", attention=TextAttention("attn.processor", "joint", text_at="last"),
           note="MMDiT; CLIP-L + CLIP-G + T5 (T5 may be absent)"),
    Family("flux-schnell", "FLUX.1 schnell", ("FluxPipeline",), steps=4, guidance=0.0,
           call={"max_sequence_length": 256}, match={"transformer.guidance_embeds": False},
           note="timestep-distilled: 4 steps, no guidance; CLIP-L pooled + T5", **FLUX),
    Family("flux-dev", "FLUX.1 dev", ("FluxPipeline",), steps=28, guidance=3.5,
           note="guidance-distilled: the scale is an input of the transformer, not a second pass", **FLUX),
    Family("pixart-sigma", "PixArt-Σ", ("PixArtSigmaPipeline",), **PIXART),
    Family("pixart-alpha", "PixArt-α", ("PixArtAlphaPipeline",), min_steps=2, **PIXART),   # 1 step: DMD's path
]
BY_NAME = {f.name: f for f in FAMILIES}


def unregistered(pipeline_class: str) -> Family:
    """A pipeline the registry does not know: drawn through its own __call__ (generate, scan, cliques)."""
    return Family("unregistered", pipeline_class, (pipeline_class,), denoiser="",
                  schedulers=UNET_SCHEDULERS + FLOW_SCHEDULERS, steps=50, guidance=7.5)


def identify(pipeline_class: str, config: Callable[[str], dict]) -> Family:
    """The family of a pipeline class whose component configs ``config(component)`` returns ({} if none)."""
    for family in FAMILIES:
        if pipeline_class not in family.pipelines:
            continue
        if all(config(key.partition(".")[0]).get(key.partition(".")[2]) == want for key, want in family.match.items()):
            return family
    return unregistered(pipeline_class)


def _read_config(folder: Path, component: str) -> dict:
    for name in ("config.json", "scheduler_config.json"):
        path = folder / component / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def family_of_folder(folder: Path) -> Family:
    """A diffusers folder's family, from ``model_index.json`` and its configs alone (nothing loads)."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    return identify(name or "unknown pipeline", lambda c: _read_config(folder, c))


def family_of_pipe(pipe) -> Family:
    """A loaded pipeline's family, from its class and its components' configs."""
    def config(component: str) -> dict:
        module = getattr(pipe, component, None)
        cfg = getattr(module, "config", None)
        if cfg is None:
            return {}
        return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)   # transformers' configs vs diffusers' 
    return identify(type(pipe).__name__, config)


def require(family: Family, what: str, model: str, remedy: str | None = None) -> None:
    """Refuse ``what`` (it reads the denoiser through the family's adapter) for a family the registry does not
    name, in one line that says what still works."""
    if family.registered:
        return
    known = ", ".join(dict.fromkeys(f.title for f in FAMILIES))
    raise InputError(f"{what} needs a registered model family, and {model} is a {family.title}, which the registry "
                     f"does not know ({known})",
                     (f"{remedy}; " if remedy else "") + "generate, scan and cliques still work with it; add the "
                     "family to imgextract/models/families.py to score it")


def check_scheduler(family: Family, class_name: str, short: str | None = None) -> None:
    """A sampler the family cannot use is refused by name (a flow-matching model with DDIM, say)."""
    allowed = {SCHEDULERS[s] for s in family.schedulers}
    if class_name not in allowed:
        raise InputError(f"scheduler '{short or class_name}' does not fit {family.title} models",
                         f"use one of {', '.join(family.schedulers)} (or leave --scheduler out for the model's own)")


def denoiser_module(loaded):
    """The loaded pipeline's denoiser (its UNet or transformer), or None when the family does not say."""
    family = loaded.family
    name = family.denoiser if family is not None and family.denoiser else None
    return getattr(loaded.pipe, name, None) if name else getattr(loaded.pipe, "unet", None)


def size_multiple(family: Family, pipe) -> int:
    """What image sides must be multiples of: the VAE factor × the transformer's patch × Flux's 2×2 packing, and
    what the pipeline's own check demands."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    module = getattr(pipe, family.denoiser, None) if family.registered else None
    patch = int(getattr(getattr(module, "config", None), "patch_size", None) or 1) if module is not None else 1
    return _multiple(family, factor, patch)


def folder_size_multiple(family: Family, folder: Path) -> int | None:
    """:func:`size_multiple` from a diffusers folder's config files, before anything loads (the VAE halves the
    side once per block after the first, as its pipelines compute ``vae_scale_factor``); None when they do not
    say."""
    blocks = _read_config(Path(folder), "vae").get("block_out_channels")
    if not family.registered or not isinstance(blocks, list) or not blocks:
        return None
    patch = _read_config(Path(folder), family.denoiser).get("patch_size") or 1
    return _multiple(family, 2 ** (len(blocks) - 1), int(patch)) if isinstance(patch, int) else None


def _multiple(family: Family, factor: int, patch: int) -> int:
    import math
    return math.lcm(factor * patch * family.packing, family.side_multiple)


def check_size(family: Family, size: tuple[int, int], pipe=None, multiple: int | None = None) -> None:
    m = multiple or size_multiple(family, pipe)
    if size[0] % m or size[1] % m:
        raise InputError(f"--size {size[0]} {size[1]} does not fit this {family.title} model",
                         f"use sides that are multiples of {m}")
