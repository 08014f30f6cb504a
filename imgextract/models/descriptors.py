"""Copy-detection descriptors: the similarity the papers report beside a verdict.

A descriptor is not the index's embedder: the embedder finds candidates, the verdict is the
pixel test, and a descriptor only adds the number the literature reports for each candidate
(Somepalli et al. and MemBench count generations with SSCD similarity > 0.5; Wen et al. call
> 0.7 memorized). Its vectors are stored per training image when the index is built
(``index build --descriptor``), so a scan never decodes a training image for it.

Specs (a registry kept as data, as ``embedders.LOADERS``):

* ``sscd:PATH`` — SSCD (Pizzi et al., 2022), the ``sscd_disc_mixup`` form: torchvision's
  ResNet-50 trunk, GeM pooling (p = 3), a 2048 → 512 projection, L2-normalised. PATH is a
  ``.safetensors`` file; ``imgextract convert sscd`` makes one from the official TorchScript
  release, and :func:`convert_sscd` is the only code in imgextract that opens TorchScript.
  Images are resized to 320 × 320 (the SSCD README's ``skew_320`` form, so any batch stacks)
  and normalised with ImageNet's mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from imgextract.errors import InputError
from imgextract.models import weights

SSCD_DIM = 512
SSCD_SIZE = 320
GEM_P = 3.0
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAX_RELEASE = 1 << 30          # the official release is ~100 MB; a bigger file is not SSCD
CONVERT_REMEDY = ("convert the official release once: imgextract convert sscd sscd_disc_mixup.torchscript.pt "
                  "sscd.safetensors, then pass --descriptor sscd:sscd.safetensors")
SHARES = (0.5, 0.7)            # the thresholds the papers count generations above


def sscd_net():
    """SSCD's ResNet-50 + GeM + projection from torchvision parts; its state dict is the
    safetensors layout (torchvision's resnet50 names, the projection as ``fc``)."""
    import torch
    from torch import nn
    from torchvision.models import resnet50

    class GeM(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)

    class SSCD(nn.Module):
        def __init__(self):
            super().__init__()
            net = resnet50(weights=None)
            net.avgpool = GeM()
            net.fc = nn.Linear(2048, SSCD_DIM)
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.net(x), dim=1)

    return SSCD().eval()


def _state_keys(model) -> list[str]:
    return [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]


def file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class SSCDDescriptor:
    """SSCD on the best available device; float32, L2-normalised rows (inner product = cosine)."""

    batch = 16

    def __init__(self, path: Path, device: str = "auto"):
        import torch
        from safetensors.torch import load_file
        self.path = Path(path).resolve()
        self.spec = f"sscd:{self.path}"
        self.dim = SSCD_DIM
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            state = load_file(str(self.path))
        except Exception as exc:  # safetensors raises its own error types on a damaged header
            raise InputError(f"descriptor {self.spec}: cannot read it as safetensors ({str(exc).splitlines()[0]})",
                             CONVERT_REMEDY) from exc
        model = sscd_net()
        wanted = set(_state_keys(model))
        have = {k for k in state if not k.endswith("num_batches_tracked")}
        if have != wanted or any(tuple(state[k].shape) != tuple(v.shape) for k, v in model.state_dict().items()
                                 if k in state):
            raise InputError(f"descriptor {self.spec} is not SSCD's ResNet-50 + GeM + projection "
                             f"({len(have & wanted)} of {len(wanted)} tensors match)", CONVERT_REMEDY)
        model.load_state_dict(state, strict=False)
        self.model = model.to(self.device).eval()
        self._weights = file_fingerprint(self.path)

    def tensors(self, images: list[Image.Image]):
        import torch
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        x = np.stack([np.asarray(im.convert("RGB").resize((SSCD_SIZE, SSCD_SIZE), Image.BILINEAR), np.float32)
                      for im in images]) / 255.0
        return (torch.from_numpy(x).permute(0, 3, 1, 2) - mean) / std

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        import torch
        if not images:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch):
                out.append(self.model(self.tensors(images[i:i + self.batch]).to(self.device)).float().cpu().numpy())
        return np.concatenate(out)

    def record(self) -> dict:
        return {"spec": self.spec, "name": "sscd", "dimension": self.dim, "weights_fingerprint": self._weights,
                "preprocessing": f"bilinear resize to {SSCD_SIZE}x{SSCD_SIZE} RGB, ImageNet mean/std; "
                                 f"ResNet-50, GeM p={GEM_P:g}, 2048->{SSCD_DIM} projection, L2-normalise"}


def _sscd_file(arg: str) -> Path:
    """The file a ``sscd:`` spec names, checked: a safetensors file of a plausible size, never a pickle."""
    path = Path(arg).expanduser()
    if not arg:
        raise InputError("descriptor 'sscd:' names no file", "use --descriptor sscd:PATH.safetensors")
    if weights.is_pickle(path):
        weights.refuse(f"descriptor 'sscd:{arg}'", path, CONVERT_REMEDY)
    if not path.is_file():
        raise InputError(f"descriptor file {path} not found", CONVERT_REMEDY)
    if path.suffix != ".safetensors":
        raise InputError(f"descriptor 'sscd:{arg}' is not a .safetensors file", CONVERT_REMEDY)
    if path.stat().st_size > MAX_RELEASE:
        raise InputError(f"descriptor file {path} is {path.stat().st_size:,} bytes, over the {MAX_RELEASE:,} an "
                         "SSCD model can be", CONVERT_REMEDY)
    return path


def _load_sscd(arg: str, device: str) -> SSCDDescriptor:
    return SSCDDescriptor(_sscd_file(arg), device)


LOADERS: dict[str, Callable[[str, str], SSCDDescriptor]] = {"sscd": _load_sscd}


def load_descriptor(spec: str, device: str = "auto") -> SSCDDescriptor:
    """The one factory: ``sscd:PATH`` → a descriptor."""
    kind, _, arg = spec.partition(":")
    if kind not in LOADERS:
        raise InputError(f"unknown descriptor '{spec}'", "use sscd:PATH.safetensors (see imgextract convert sscd)")
    return LOADERS[kind](arg, device)


def resolved_spec(spec: str | None) -> str | None:
    """The spec with its file's absolute path (a worker elsewhere, or a resumed scan, finds the same
    file), checked to exist; None stays None."""
    if spec is None:
        return None
    kind, _, arg = spec.partition(":")
    if kind not in LOADERS:
        raise InputError(f"unknown descriptor '{spec}'", "use sscd:PATH.safetensors (see imgextract convert sscd)")
    return f"{kind}:{_sscd_file(arg).resolve()}"


def same_descriptor(a: dict | None, b: dict | None) -> bool:
    """Two records describe the same vectors: name, size and weights agree (the file may have moved)."""
    keys = ("name", "dimension", "weights_fingerprint")
    return a is not None and b is not None and all(a.get(k) == b.get(k) for k in keys)


# -- the one place TorchScript is opened ---------------------------------------------------------------------

def _orders(keys: list[str]) -> list[list[str]]:
    """Target key orders a release's tensors may come in: torchvision's (each block's convolutions,
    then its shortcut), and shortcut-first (a block that registers its downsampling first)."""
    first = list(keys)
    blocks: dict[str, list[str]] = {}
    for k in keys:
        parts = k.split(".")
        if len(parts) > 3 and parts[1].startswith("layer"):
            blocks.setdefault(".".join(parts[:3]), []).append(k)
    moved, seen = [], set()
    for k in keys:
        parts = k.split(".")
        block = ".".join(parts[:3]) if len(parts) > 3 and parts[1].startswith("layer") else None
        if block is None:
            moved.append(k)
        elif block not in seen:
            seen.add(block)
            members = blocks[block]
            moved += [m for m in members if ".downsample." in m] + [m for m in members if ".downsample." not in m]
    return [first, moved] if moved != first else [first]


def convert_sscd(src: Path, dst: Path) -> dict:
    """The official SSCD TorchScript release → a safetensors file of :func:`sscd_net`'s layout.

    The release's tensors are taken in their registration order and must match the layout's
    shapes one for one; the result is then accepted only if the converted model and the
    TorchScript model give the same descriptors (within 1e-4) on a fixed probe batch, so a file
    of any other architecture, or one whose tensors pair up wrongly, is refused."""
    import torch
    from safetensors.torch import save_file
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError(f"{src} not found", "give the path of sscd_disc_mixup.torchscript.pt")
    if src.stat().st_size > MAX_RELEASE:
        raise InputError(f"{src} is {src.stat().st_size:,} bytes, over the {MAX_RELEASE:,} an SSCD release can be",
                         "give the path of sscd_disc_mixup.torchscript.pt")
    if dst.suffix != ".safetensors":
        raise InputError(f"output {dst} is not a .safetensors file", "name the output OUT.safetensors")
    if dst.exists() or dst.is_symlink():
        raise InputError(f"output {dst} already exists; refusing to write over it", "choose a new file name")
    if not dst.parent.is_dir():
        raise InputError(f"folder {dst.parent} does not exist", "create it, or choose another output path")
    try:
        with warnings.catch_warnings():   # torch deprecates TorchScript; this reader exists for the release
            warnings.simplefilter("ignore", FutureWarning)
            script = torch.jit.load(str(src), map_location="cpu").eval()
    except Exception as exc:  # torch raises RuntimeError, ValueError or its own for a non-TorchScript file
        raise InputError(f"{src} is not a TorchScript archive ({str(exc).splitlines()[0][:200]})",
                         "give the official sscd_disc_mixup.torchscript.pt") from exc
    given = [(k, v) for k, v in script.state_dict().items() if not k.endswith("num_batches_tracked")]
    model = sscd_net()
    target = model.state_dict()
    keys = _state_keys(model)
    probe = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    refused = (f"{src} is not SSCD's ResNet-50 + GeM + projection ({len(given)} tensors, the layout has "
               f"{len(keys)})")
    with torch.no_grad():
        try:
            expected = torch.nn.functional.normalize(script(probe).float().reshape(2, -1), dim=1)
        except Exception as exc:  # the archive's own code failed on an image batch: not an image descriptor
            raise InputError(f"{refused}: it does not run on a 3-channel image batch", CONVERT_REMEDY) from exc
        for order in _orders(keys):
            if len(given) != len(order) or any(tuple(v.shape) != tuple(target[k].shape)
                                               for k, (_, v) in zip(order, given)):
                continue
            state = {k: v.detach().to(torch.float32).contiguous().clone() for k, (_, v) in zip(order, given)}
            model.load_state_dict(state, strict=False)
            if expected.shape == (2, SSCD_DIM) and float((model(probe) - expected).abs().max()) <= 1e-4:
                tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
                save_file(state, str(tmp), metadata={"format": "imgextract-sscd", "source": src.name})
                os.replace(tmp, dst)
                return {"tensors": len(state), "out": str(dst), "fingerprint": file_fingerprint(dst)}
    raise InputError(refused, "give the official sscd_disc_mixup.torchscript.pt (ResNet-50, 512-d)")
