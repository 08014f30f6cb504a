import imagehash
import numpy as np
import pytest
from PIL import Image

from imgextract import hashes


def imagehash_three(im):
    return {name: str(fn(im)) for name, fn in hashes.HASHES.items()}


@pytest.mark.parametrize("size", [None, (512, 512), (333, 250), (64, 64), (9, 8), (1000, 700)])
def test_hashes_bit_identical_to_imagehash(photos, size):
    """Every real photograph, at several sizes and in several modes, gives imagehash's own hashes."""
    for name, im in photos.items():
        for mode in ["RGB", "L", "RGBA", "P", "I;16"]:
            x = im.convert("L").convert("I;16") if mode == "I;16" else im.convert(mode)
            if size:
                x = x.resize(size)
            assert hashes.image_hashes(x) == imagehash_three(x), (name, size, mode)


def test_whash_tie_at_the_median_falls_back_to_imagehash(monkeypatch):
    """Flat regions tie block sums at the median: the fast path must hand over to imagehash."""
    a = np.zeros((64, 64), np.uint8)
    a[:40] = 200         # 40 of 64 blocks equal: the 32nd and 33rd block sums tie
    a[48:56, 8:16] = 90
    im = Image.fromarray(a).convert("RGB")
    calls = []
    real = imagehash.whash
    monkeypatch.setattr(imagehash, "whash", lambda img: calls.append(1) or real(img))
    assert hashes.image_hashes(im)["whash"] == str(real(im))
    assert calls  # it did fall back


def test_hamming_matches_imagehash_subtraction(photos):
    a, b, c = (hashes.image_hashes(photos[n]) for n in ["astronaut", "coffee", "rocket"])
    for kind in hashes.HASHES:
        expect = imagehash.hex_to_hash(a[kind]) - imagehash.hex_to_hash(b[kind])
        assert hashes.hamming(a[kind], b[kind]) == expect
        many = hashes.hamming_many(a[kind], [a[kind], b[kind], c[kind]])
        assert many[0] == 0 and many[1] == expect
        assert many[2] == imagehash.hex_to_hash(a[kind]) - imagehash.hex_to_hash(c[kind])
