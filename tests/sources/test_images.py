"""Opening images: one place, upright, 8-bit RGB, with the reason when it cannot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgextract.sources.images import BadImage, open_rgb


def test_alpha_is_flattened_on_white_and_sixteen_bit_grey_is_scaled(tmp_path, photos):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert np.asarray(open_rgb(tmp_path / "clear.png")).reshape(-1, 3).tolist()[0] == [255, 255, 255]
    grey = np.asarray(photos["camera"].convert("L").resize((32, 32)), np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "g16.png")
    assert np.abs(np.asarray(open_rgb(tmp_path / "g16.png"))[..., 0].astype(int) - grey).max() <= 1


def test_what_cannot_be_read_says_why(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(BadImage, match="not an image Pillow can read"):
        open_rgb(tmp_path / "x.png")
    Image.new("RGB", (3, 3)).save(tmp_path / "small.png")
    with pytest.raises(BadImage, match="too small for a 4x4 tile grid"):
        open_rgb(tmp_path / "small.png", min_side=4)
