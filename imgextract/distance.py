"""Pixel distances of the near-duplicate test (Carlini et al., 2023).

Conventions, all on RGB float arrays in [0, 1] of shape (..., H, W, 3):

* ``l2``: root-mean-square difference over every pixel and channel.
* ``tiled_l2``: split both images into a ``grid × grid`` set of tiles (4×4 = 16 tiles of
  128×128 at 512×512; tile edges are rounded when H or W is not divisible), take the RMS
  difference per tile, and return the maximum over tiles. A copy of one region that differs
  elsewhere is *not* near-exact, so the worst tile decides.
* A generation is *memorized* when ``tiled_l2 < threshold`` (0.15 by default).

Comparing two images of different sizes first brings the training image to the
generation's size (centre crop to its aspect ratio, then resize).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_THRESHOLD = 0.15
DEFAULT_GRID = 4


def to_array(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB image → float32 (H, W, 3) in [0, 1]; with ``size=(H, W)``, crop-and-resize first."""
    image = image.convert("RGB")
    if size is not None and (image.height, image.width) != tuple(size):
        image = fit(image, size)
    return np.asarray(image, dtype=np.float32) / 255.0


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect ratio of ``size=(H, W)``, then resize (bicubic)."""
    h, w = size
    target = w / h
    iw, ih = image.size
    if abs(iw / ih - target) > 1e-6:
        if iw / ih > target:
            cw = round(ih * target)
            left = (iw - cw) // 2
            image = image.crop((left, 0, left + cw, ih))
        else:
            ch = round(iw / target)
            top = (ih - ch) // 2
            image = image.crop((0, top, iw, top + ch))
    return image.resize((w, h), Image.BICUBIC)


def tile_edges(n: int, grid: int) -> np.ndarray:
    """Integer tile boundaries along one axis: ``grid + 1`` edges from 0 to n."""
    if grid < 1 or grid > n:
        raise ValueError(f"grid {grid} does not fit an axis of {n} pixels")
    return np.linspace(0, n, grid + 1).round().astype(np.int64)


def tile_mse(sq_diff: np.ndarray, grid: int) -> np.ndarray:
    """Mean of a squared difference (..., H, W, C) per tile → (..., grid, grid)."""
    h, w, c = sq_diff.shape[-3:]
    ys, xs = tile_edges(h, grid), tile_edges(w, grid)
    per_pixel = sq_diff.sum(axis=-1)
    sums = np.add.reduceat(np.add.reduceat(per_pixel, ys[:-1], axis=-2), xs[:-1], axis=-1)
    counts = np.outer(np.diff(ys), np.diff(xs)) * c
    return sums / counts


def tiled_l2(a: np.ndarray, b: np.ndarray, grid: int = DEFAULT_GRID) -> np.ndarray | float:
    """Max over tiles of the per-tile RMS distance; broadcasts over leading axes."""
    d = np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)
    out = np.sqrt(tile_mse(d * d, grid)).max(axis=(-2, -1))
    return float(out) if np.ndim(out) == 0 else out


def l2(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Plain RMS distance over all pixels and channels; broadcasts over leading axes."""
    d = np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)
    out = np.sqrt((d * d).mean(axis=(-3, -2, -1)))
    return float(out) if np.ndim(out) == 0 else out
