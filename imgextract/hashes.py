"""Perceptual hashes with imagehash's conventions, computed from one greyscale conversion.

Hashes are imagehash's own (``phash``, ``dhash``, ``whash`` with their default 8×8 size),
stored as imagehash's hex strings so they round-trip through ``imagehash.hex_to_hash``.
Distance = Hamming distance between the bit arrays, exactly ``hash_a - hash_b`` in imagehash;
0 means identical hashes, 64 means every bit differs.

Why not call imagehash three times: each call converts to greyscale again, and ``whash``
runs a full-resolution Haar decomposition and reconstruction (≈20 ms at 512 px) only to
subtract the image mean. :func:`image_hashes` converts once, keeps imagehash's own resizes
(PIL LANCZOS, so phash and dhash are the same computation), and gets whash from integer block
sums: with Haar wavelets the level-k approximation is a positive multiple of each block's
sum minus the global mean, so "coefficient > median" equals "block sum > median of block
sums". That is exact in integers; imagehash's floating-point path can only disagree when two
block sums tie at the median, and then :func:`image_hashes` calls ``imagehash.whash`` itself.
The result is bit-identical to imagehash (tested on real photographs, sizes and modes).
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

HASHES = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash}
HASH_SIZE = 8
LANCZOS = Image.Resampling.LANCZOS


def image_hashes(image: Image.Image) -> dict[str, str]:
    """All three hashes of one image, as imagehash hex strings (bit-identical to imagehash)."""
    grey = image if image.mode == "L" else image.convert("L")
    return {"phash": str(_phash(grey)), "dhash": str(_dhash(grey)), "whash": str(_whash(grey, image))}


def _phash(grey: Image.Image) -> imagehash.ImageHash:
    """imagehash.phash (hash_size 8, highfreq_factor 4) on an already greyscale image."""
    pixels = np.asarray(grey.resize((HASH_SIZE * 4, HASH_SIZE * 4), LANCZOS))
    import scipy.fftpack   # here, not at the top: most processes never hash (0.25 s of imports)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:HASH_SIZE, :HASH_SIZE]
    return imagehash.ImageHash(dct > np.median(dct))


def _dhash(grey: Image.Image) -> imagehash.ImageHash:
    pixels = np.asarray(grey.resize((HASH_SIZE + 1, HASH_SIZE), LANCZOS))
    return imagehash.ImageHash(pixels[:, 1:] > pixels[:, :-1])


def _whash(grey: Image.Image, original: Image.Image) -> imagehash.ImageHash:
    """imagehash.whash (haar, remove_max_haar_ll) from integer block sums; falls back on a tie."""
    scale = max(2 ** int(np.log2(min(grey.size))), HASH_SIZE)
    pixels = np.asarray(grey.resize((scale, scale), LANCZOS), dtype=np.int64)
    block = scale // HASH_SIZE
    sums = pixels.reshape(HASH_SIZE, block, HASH_SIZE, block).sum(axis=(1, 3))
    ordered = np.sort(sums, axis=None)
    mid = ordered.size // 2
    if ordered[mid - 1] == ordered[mid]:  # a tie at the median: only imagehash's own arithmetic is exact
        return imagehash.whash(original)
    return imagehash.ImageHash(2 * sums > ordered[mid - 1] + ordered[mid])


def hex_to_bits(hexes: list[str]) -> np.ndarray:
    """imagehash hex strings → boolean bit matrix (n, bits), in imagehash's bit order."""
    return np.stack([imagehash.hex_to_hash(h).hash.reshape(-1) for h in hexes])


def hamming(a: str, b: str) -> int:
    """Hamming distance of two imagehash hex strings (same as imagehash's ``a - b``)."""
    return int(np.count_nonzero(hex_to_bits([a])[0] != hex_to_bits([b])[0]))


def hamming_many(query: str, others: list[str]) -> np.ndarray:
    """Hamming distance of one hash to many, vectorised."""
    if not others:
        return np.zeros(0, dtype=np.int64)
    q = hex_to_bits([query])[0]
    return np.count_nonzero(hex_to_bits(others) != q, axis=1).astype(np.int64)
