"""Loading diffusers text-to-image pipelines: one function for every form of MODEL.

MODEL is a local diffusers folder, a single-file checkpoint (``.safetensors`` / ``.ckpt``,
Stable Diffusion 1.x/2.x/XL), or a Hugging Face hub id. Hub ids are first resolved to the
local snapshot folder, so every model is loaded and fingerprinted from files on disk.
The safety checker is always off: an audit must see what the model draws.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from imgextract.errors import InputError
from imgextract.models import weights
from imgextract.models.families import SCHEDULERS, Family, family_of_pipe

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt"}


def quiet_libraries() -> None:
    """diffusers/transformers chatter would drown the progress output."""
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog
        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


@dataclass
class LoadedModel:
    pipe: object
    model: str
    kind: str            # "folder", "single-file" or "hub"
    local_path: Path
    fingerprint: str
    device: str
    dtype: str
    family: "Family" = None   # set by load_pipeline from the loaded pipeline (families.family_of_pipe)


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def check_device(device: str) -> None:
    """Refuse a device name torch would reject, or one this machine does not have, before loading."""
    import re
    if device == "auto" or device == "cpu":
        return
    if not re.fullmatch(r"cuda(:\d+)?|mps", device):
        raise InputError(f"--device {device!r} is not a device", f"use {DEVICE_CHOICES}")
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is visible here", "use --device cpu (or auto)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: no Apple GPU is visible here", "use --device cpu (or auto)")


def pick_device(device: str = "auto") -> str:
    import torch
    check_device(device)
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str):
    import torch
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    try:
        return getattr(torch, {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(dtype, dtype))
    except AttributeError as exc:
        raise InputError(f"unknown dtype '{dtype}'", "use auto, float32, float16 or bfloat16") from exc


def fingerprint_path(path: Path) -> str:
    """sha256 over the weight and config files (relative name + content): what was audited."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                 if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


KNOWN_LIBRARIES = {"diffusers", "transformers", None}
UNSAFE_REMEDY = ("convert it once, in a sandbox you trust: python -c \"from diffusers import DiffusionPipeline; "
                 "DiffusionPipeline.from_pretrained('{path}', use_safetensors=False)"
                 ".save_pretrained('{path}-safetensors', safe_serialization=True)\", then pass {path}-safetensors")


def check_safe_folder(path: Path) -> None:
    """Refuse what would run code on load: pickled weights without a safetensors twin, custom code."""
    import json
    code = sorted(p.relative_to(path) for p in path.rglob("*.py"))
    try:
        index = json.loads((path / "model_index.json").read_text())
    except ValueError as exc:
        raise InputError(f"{path / 'model_index.json'} is not valid JSON", "re-save the pipeline folder") from exc
    if not isinstance(index, dict):
        raise InputError(f"{path / 'model_index.json'} holds a {type(index).__name__}, not a JSON object",
                         "re-save the pipeline folder with save_pretrained")
    check_sane_folder(path)
    custom = [f"{name} ({spec[0]}.{spec[1]})" for name, spec in index.items()
              if isinstance(spec, list) and len(spec) == 2 and spec[0] not in KNOWN_LIBRARIES]
    if code or custom:
        what = ", ".join([*map(str, code), *custom][:3])
        raise InputError(f"model folder {path} was refused as unsafe: it needs custom code ({what})",
                         "imgextract loads only diffusers/transformers components; save the pipeline with "
                         "standard classes (save_pretrained) and pass that folder")
    for sub in [path, *(p for p in path.iterdir() if p.is_dir())]:
        pickled = weights.unguarded_pickle(sub)
        if pickled is not None:
            weights.refuse(f"model folder {path}", pickled.relative_to(path), UNSAFE_REMEDY.format(path=path), twin=True)


MAX_CONFIG_INT = 1 << 15        # channels, dims, layers: real models stay far below (SDXL's largest is 2,048)
MAX_SAMPLE_SIZE = 2048           # latent or pixel side a config may ask for (SD: 64–128 latent, 512–1024 px)
MAX_HEADER = 100 * 1024 * 1024   # safetensors' own header limit


def check_sane_folder(path: Path) -> None:
    """Sizes in a stranger's configs and weight headers checked against sane bounds before anything
    is allocated: a config asking for 4096² samples or 2^16 channels, or a safetensors header claiming
    gigabytes, is refused with the file and the value."""
    import json
    for config in sorted(path.glob("*/config.json")) + sorted(path.glob("*/scheduler_config.json")):
        try:
            data = json.loads(config.read_text())
        except (ValueError, OSError) as exc:
            raise InputError(f"{config} is not valid JSON", "re-save the pipeline folder") from exc
        if not isinstance(data, dict):
            raise InputError(f"{config} holds a {type(data).__name__}, not a JSON object", "re-save the pipeline folder")
        for key, value in data.items():
            if key == "sample_size":
                limit = MAX_SAMPLE_SIZE
            elif key == "vocab_size":
                limit = 1 << 20
            elif any(word in key for word in ("channels", "dim", "size", "layers", "heads")):
                limit = MAX_CONFIG_INT
            else:
                continue
            values = value if isinstance(value, list) else [value]
            big = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit]
            if big:
                raise InputError(f"{config}: {key} = {big[0]} is beyond any real model's (at most {limit})",
                                 "this folder is damaged or hostile; use the model's published files")
    for weights_file in sorted(path.glob("*/*.safetensors")) + sorted(path.glob("*.safetensors")):
        check_header(weights_file)


def check_header(weights_file: Path) -> None:
    """A safetensors file's 8-byte header length, checked against the file and the format's limit."""
    import struct
    with open(weights_file, "rb") as f:
        head = f.read(8)
    size = weights_file.stat().st_size
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
    if n is None or n > MAX_HEADER or n + 8 > size:
        raise InputError(f"{weights_file} has a safetensors header of {n if n is not None else '?'} bytes in a "
                         f"{size:,}-byte file", "this file is damaged or hostile; download the model again")


def resolve_model(model: str) -> tuple[str, Path]:
    """(kind, local path) for MODEL; downloads nothing that is not already reachable."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InputError(f"model folder {path} has no model_index.json",
                             "point --model at a diffusers pipeline folder (saved with save_pretrained)")
        check_safe_folder(path.resolve())
        return "folder", path.resolve()
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise InputError(f"model file {path} is not a .safetensors or .ckpt checkpoint",
                             "pass a single-file Stable Diffusion checkpoint or a diffusers folder")
        if path.suffix == ".safetensors":
            check_header(path)
        return "single-file", path.resolve()
    looks_like_path = model.startswith((".", "/", "~")) or model.endswith((".safetensors", ".ckpt")) or model.count("/") != 1
    if looks_like_path:
        raise InputError(f"model {model} does not exist",
                         "pass an existing diffusers folder, a .safetensors/.ckpt file, or a hub id ORG/NAME")
    try:
        from diffusers import DiffusionPipeline
        local = DiffusionPipeline.download(model)
    except Exception as exc:  # hub errors come in many types; all mean "not reachable"
        raise InputError(f"model {model} is not a local path and could not be fetched from the hub "
                         f"({type(exc).__name__})",
                         "download it first (huggingface-cli download) or pass a local folder or checkpoint") from exc
    check_safe_folder(Path(local))
    return "hub", Path(local)


def load_pipeline(model: str, device: str = "auto", dtype: str = "auto",
                  model_config: str | None = None) -> LoadedModel:
    """The one loader a user's checkpoint and the test models go through."""
    check_device(device)   # a bad name, and a missing model, are refused before diffusers' 5 s of imports
    kind, local = resolve_model(model)
    import diffusers

    quiet_libraries()  # here, not at start-up: a bad argument is refused before diffusers is imported
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    common = {"dtype": torch_dtype, "safety_checker": None, "requires_safety_checker": False}
    if kind == "single-file":
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint
        try:
            model_type = infer_diffusers_model_type(load_single_file_checkpoint(str(local)))
            xl = model_type.startswith("xl")
            cls = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
            kwargs = {"dtype": torch_dtype} if xl else dict(common)
            if model_config:
                kwargs["config"] = model_config
            pipe = cls.from_single_file(str(local), **kwargs)
        except Exception as exc:  # diffusers raises many types here; all mean "cannot build from this file"
            raise InputError(f"cannot build a pipeline from {local} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''})",
                             "pass a Stable Diffusion 1.x/2.x/XL checkpoint; offline, add --model-config DIR "
                             "naming a diffusers folder of the same architecture") from exc
    else:
        check_pipeline_class(local)
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(local), use_safetensors=True,
                                                           **{**absent_components(local), **common})
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe, model, kind, local, fingerprint_path(local), device, str(torch_dtype).replace("torch.", ""),
                       family_of_pipe(pipe))


def absent_components(folder: Path) -> dict:
    """Components a folder was saved without (``[null, null]`` in model_index.json, as SD3 without its T5),
    passed as None: diffusers' loader otherwise refuses the folder it saved itself."""
    import json
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: None for k, v in index.items() if not k.startswith("_") and v == [None, None]} \
        if isinstance(index, dict) else {}


def check_pipeline_class(folder: Path) -> None:
    """A folder naming a pipeline class this diffusers lacks is refused by name before loading."""
    import json

    import diffusers
    name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if not isinstance(name, str) or not name.endswith("Pipeline") or not hasattr(diffusers, name):
        raise InputError(f"model folder {folder}: its model_index.json names the pipeline class {name!r}, which "
                         f"diffusers {diffusers.__version__} does not have",
                         "upgrade diffusers (pip install -U diffusers) if the class is newer, or re-save the "
                         "pipeline with save_pretrained")


def peek_family(model: str) -> Family | None:
    """MODEL's family read from its files before anything loads; None when only loading can tell (a hub id
    not yet downloaded, a single-file checkpoint: SD 1.x, 2.x or XL)."""
    from imgextract.models.families import family_of_folder
    path = Path(model).expanduser()
    if path.is_dir() and (path / "model_index.json").is_file():
        return family_of_folder(path)
    return None


def set_scheduler(pipe, name: str | None, family: Family | None = None) -> str:
    """Swap the sampler by short name or class name; returns the class name in use. A family refuses a
    sampler of the wrong kind (DDIM on a flow-matching model) before it is built."""
    import diffusers
    from imgextract.models.families import check_scheduler, family_of_pipe
    if name:
        class_name = SCHEDULERS.get(name, name)
        if class_name not in SCHEDULERS.values():
            raise InputError(f"unknown scheduler '{name}'", f"use one of {', '.join(SCHEDULERS)}")
        check_scheduler(family or family_of_pipe(pipe), class_name, name)
        cls = getattr(diffusers, class_name)
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    return type(pipe.scheduler).__name__


def native_size(pipe, family: Family | None = None) -> tuple[int, int]:
    """The resolution the model was trained at: the denoiser's sample size (or the pipeline's
    ``default_sample_size``, Flux) × the VAE scale factor."""
    from imgextract.models.families import family_of_pipe
    family = family or family_of_pipe(pipe)
    scale = getattr(pipe, "vae_scale_factor", 8)
    sample = None
    if family.size_from == "pipeline":
        sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        module = next((getattr(pipe, n) for n in (family.denoiser, "unet", "transformer")
                       if getattr(pipe, n, None) is not None), None)
        sample = getattr(getattr(module, "config", None), "sample_size", None) if module is not None else None
    if sample is None:
        raise InputError(f"cannot tell the native size of this {type(pipe).__name__}", "pass --size H W")
    sample = sample if isinstance(sample, (tuple, list)) else (sample, sample)
    return int(sample[0] * scale), int(sample[1] * scale)
