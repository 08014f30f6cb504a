"""Perceptual hashes with imagehash's conventions.

Hashes are imagehash's own (``phash``, ``dhash``, ``whash`` with their default 8×8 size),
stored as imagehash's hex strings so they round-trip through ``imagehash.hex_to_hash``.
Distance = Hamming distance between the bit arrays, exactly ``hash_a - hash_b`` in imagehash;
0 means identical hashes, 64 means every bit differs.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

HASHES = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash}


def image_hashes(image: Image.Image) -> dict[str, str]:
    """All three hashes of one image, as imagehash hex strings."""
    return {name: str(fn(image)) for name, fn in HASHES.items()}


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
