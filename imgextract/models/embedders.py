"""Embedders: one registry maps a spec string to a loader.

Specs:

* ``pixel`` — a training-free descriptor: the image centre-cropped to a square, area-averaged
  to a 16×16 colour thumbnail, mean-subtracted and L2-normalised (768 numbers). Needs no
  weights, so it is the offline default; it finds near-exact copies, not semantic matches.
* ``clip:MODEL/PRETRAINED`` — open_clip ``create_model_and_transforms(MODEL, pretrained=...)``;
  PRETRAINED is a tag (``laion2b_s34b_b79k``) or a checkpoint file.
* ``clip:hf-hub:ORG/REPO`` — open_clip from the Hugging Face hub.
* ``clip:PATH`` — a local open_clip folder (``open_clip_config.json`` + weights).

Every embedder returns float32, L2-normalised rows, so inner product = cosine similarity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
from PIL import Image

from imgextract.errors import InputError
from imgextract.models import weights


class Embedder(Protocol):
    spec: str
    dim: int

    def embed(self, images: list[Image.Image]) -> np.ndarray: ...

    def record(self) -> dict: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def square_crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    if w == h:
        return image   # nothing to crop: no copy
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s))


@dataclass
class PixelEmbedder:
    """Normalised colour thumbnail: cheap, deterministic, robust to JPEG, noise and resizing."""

    side: int = 16
    spec: str = "pixel"
    dim: int = field(init=False)
    per_image: bool = True   # no batch speed-up: an index build embeds each image in its decoding thread

    def __post_init__(self) -> None:
        self.dim = self.side * self.side * 3

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        thumbs = [np.asarray(square_crop(im if im.mode == "RGB" else im.convert("RGB")).resize((self.side, self.side), Image.BOX),
                             dtype=np.float32).reshape(-1) / 255.0 for im in images]
        x = np.stack(thumbs)
        x -= x.mean(axis=1, keepdims=True)
        return _normalise(x)

    def record(self) -> dict:
        return {"spec": self.spec, "name": "pixel", "dimension": self.dim,
                "preprocessing": f"centre square crop, box resize to {self.side}x{self.side} RGB, "
                                 "subtract mean, L2-normalise"}


class ClipEmbedder:
    """open_clip image tower; batches run on the best available device."""

    def __init__(self, spec: str, model_name: str, pretrained: str | None, device: str = "auto"):
        import open_clip
        import torch

        self.spec = spec
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=self.device)
        except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
            raise InputError(f"cannot load open_clip embedder '{spec}' ({str(exc).splitlines()[0]})",
                             "use clip:MODEL/PRETRAINED with a cached tag or local file, clip:hf-hub:ORG/REPO, "
                             "or clip:PATH to a folder with open_clip_config.json") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        with torch.no_grad():
            size = getattr(model.visual, "image_size", None)
            size = size if isinstance(size, (tuple, list)) else (size, size)
            probe = torch.zeros(1, 3, *size, device=self.device)
            self.dim = int(model.encode_image(probe).shape[-1])
        self._weights = self._fingerprint()

    def _fingerprint(self) -> str:
        import torch
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes()[:4096])
        return h.hexdigest()[:16]

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.no_grad():
            feats = self.model.encode_image(batch).float().cpu().numpy()
        return _normalise(feats)

    def record(self) -> dict:
        return {"spec": self.spec, "name": "clip", "model": self.model_name, "pretrained": self.pretrained,
                "dimension": self.dim, "weights_fingerprint": self._weights,
                "preprocessing": repr(self.preprocess).replace("\n", " ")}


def _load_clip(arg: str, device: str) -> Embedder:
    spec = f"clip:{arg}"
    if not arg:
        raise InputError("embedder 'clip:' names no model", "use clip:MODEL/PRETRAINED, clip:hf-hub:ORG/REPO or clip:PATH")
    if arg.startswith("hf-hub:"):
        return ClipEmbedder(spec, arg, None, device)
    local = Path(arg)
    if local.is_file():
        if weights.is_pickle(local):
            weights.refuse(f"embedder '{spec}'", local, PICKLE_REMEDY)
        raise InputError(f"embedder '{spec}' names a file", "use clip:MODEL/FILE.safetensors or clip:FOLDER")
    if local.is_dir():
        if not (local / "open_clip_config.json").is_file():
            raise InputError(f"folder {local} has no open_clip_config.json",
                             "point clip:PATH at an open_clip model folder (config + weights)")
        pickled = weights.unguarded_pickle(local)
        if pickled is not None:
            weights.refuse(f"embedder '{spec}'", pickled, PICKLE_REMEDY)
        return ClipEmbedder(f"clip:{local.resolve()}", f"local-dir:{local.resolve()}", None, device)
    model, _, pretrained = arg.partition("/")
    if pretrained and weights.is_pickle(Path(pretrained)):
        weights.refuse(f"embedder '{spec}'", Path(pretrained), PICKLE_REMEDY)
    return ClipEmbedder(spec, model, pretrained or None, device)


PICKLE_REMEDY = ("convert it once, in a sandbox you trust: load the state dict with torch.load and save it with "
                 "safetensors.torch.save_file(state_dict, 'open_clip_model.safetensors'), then pass that file")


LOADERS: dict[str, Callable[[str, str], Embedder]] = {
    "pixel": lambda arg, device: PixelEmbedder(),
    "clip": _load_clip,
}


def load_embedder(spec: str, device: str = "auto") -> Embedder:
    """The one factory: ``pixel``, ``clip:...`` → an embedder."""
    kind, _, arg = spec.partition(":")
    if kind not in LOADERS:
        raise InputError(f"unknown embedder '{spec}'", "use one of: pixel, clip:MODEL/PRETRAINED, clip:hf-hub:ORG/REPO, clip:PATH")
    if kind == "pixel" and arg:
        raise InputError(f"embedder 'pixel' takes no argument (got '{spec}')", "use --embedder pixel")
    return LOADERS[kind](arg, device)


def same_embedder(record_a: dict, record_b: dict) -> bool:
    """Two embedder records describe the same vectors (spec, size and weights agree)."""
    keys = ("spec", "dimension", "weights_fingerprint")
    return all(record_a.get(k) == record_b.get(k) for k in keys)


def dumps(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True)
