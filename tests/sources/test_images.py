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


def test_plain_pngs_take_the_fast_decoder_bit_for_bit_and_the_others_pillow(tmp_path, photos, monkeypatch):
    """libspng decodes plain 8-bit RGB PNGs (the scan's largest cost); every pixel equals Pillow's, and a PNG
    with transparency, a palette, an EXIF turn or a truncated body goes through Pillow's rules as before."""
    from imgextract.sources import images
    if images._FAST_PNG is None:
        pytest.skip("pyspng is not installed: every PNG is decoded by Pillow")
    calls = []
    real = images._FAST_PNG.load
    monkeypatch.setattr(images._FAST_PNG, "load", lambda data, fmt: calls.append(fmt) or real(data, fmt))
    photo = photos["astronaut"].resize((96, 80))
    photo.save(tmp_path / "plain.png")
    got = np.asarray(open_rgb(tmp_path / "plain.png"))
    assert calls == ["RGB"] and np.array_equal(got, np.asarray(Image.open(tmp_path / "plain.png").convert("RGB")))
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "plain.png", data=(tmp_path / "plain.png").read_bytes())), got)
    photo.quantize(64).save(tmp_path / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6                                  # rotated: the turn is applied, so Pillow decodes it
    photo.save(tmp_path / "turned.png", exif=exif)
    calls.clear()
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "palette.png")),
                          np.asarray(Image.open(tmp_path / "palette.png").convert("RGB")))
    assert np.asarray(open_rgb(tmp_path / "turned.png")).shape == (96, 80, 3) and calls == []
    data = (tmp_path / "plain.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage):
        open_rgb(tmp_path / "cut.png")
