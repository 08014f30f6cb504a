"""The real photographs that ship offline with scikit-image, scikit-learn and PyWavelets.

The one loader of them: the toy model's training set, the watermark data, the tests and the
benchmarks all open photographs here, so a photograph is the same pixels everywhere.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SKLEARN = ("china", "flower")          # sklearn.datasets.load_sample_image("NAME.jpg")
PYWT = ("ascent", "aero")              # pywt.data.NAME()


def photo(name: str) -> Image.Image:
    """The photograph ``name`` at its own size, as 8-bit RGB (masks as black and white, floats scaled)."""
    if name in SKLEARN:
        from sklearn.datasets import load_sample_image
        return Image.fromarray(load_sample_image(f"{name}.jpg")).convert("RGB")
    if name in PYWT:
        import pywt.data
        arr = getattr(pywt.data, name)()
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")
    import skimage.data
    if name.startswith("stereo_motorcycle_"):  # two viewpoints of one scene: distinct photographs of it
        pair = skimage.data.stereo_motorcycle()
        return Image.fromarray(pair[0 if name.endswith("left") else 1]).convert("RGB")
    arr = getattr(skimage.data, name)()
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def faces(n: int, size: int = 32) -> list[tuple[str, Image.Image]]:
    """``n`` of scikit-image's 200 real 25×25 face photographs (``lfw_subset``), as RGB at ``size``: distinct
    real photographs the demo's and the tests' toy models never train on: calibration images for the
    reconstruction null (``scripts/eval_triage.py``'s ``+faces`` models do train on them)."""
    import skimage.data
    arr = skimage.data.lfw_subset()
    if not 1 <= n <= len(arr):
        raise ValueError(f"asked for {n} faces; there are {len(arr)}")
    return [(f"face-{i:03d}", Image.fromarray((np.clip(arr[i], 0, 1) * 255).astype(np.uint8)).convert("RGB")
             .resize((size, size), Image.BICUBIC)) for i in range(n)]


# Photographs the membership toy never sees (it trains on the first twelve of toy.DEFAULT_IMAGES, and none of these
# is one of them or a crop of one): membership's references in the tests and scripts/bench_membership.py.
NEVER_SEEN = ("cell", "flower", "ascent", "aero", "stereo_motorcycle_left", "hubble_deep_field", "moon", "clock",
              "text", "grass", "gravel", "brick")


def write_never_seen(folder, size: int = 32):
    """The never-seen photographs into ``folder``, whole and their centre halves, at ``size`` px: 24 images."""
    from pathlib import Path

    from imgextract.distance import fit
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in NEVER_SEEN:
        im = photo(name)
        fit(im, (size, size)).save(folder / f"{name}.png")
        w, h = im.size
        fit(im.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)), (size, size)).save(folder / f"{name}-centre.png")
    return folder
