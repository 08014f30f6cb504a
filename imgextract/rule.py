"""The copy rule: what counts as a copy, as settings, and the one owner of their defaults.

Kept apart from the verdict's numerics (``copies``) so the command line can show the defaults without
importing numpy or scipy; ``copies`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CopyRule:
    """The thresholds of the verdict; the defaults are the calibrated ones (docs/findings.md)."""

    threshold: float = 0.15    # Carlini's tiled L2, for whole copies
    grid: int = 4              # Carlini's tiles per side
    min_share: float = 0.25    # substantial: this share of the training image's detailed area, at least...
    min_area: float = 0.10     # ...covering this share of the generation's area (an outline or a few chance blocks never count)
    block_rms: float = 0.10    # a block is near-exact below this RMS (RGB, pixels in [0, 1])...
    block_ncc: float = 0.80    # ...when its grey pixels correlate at least this much...
    detail: float = 0.015      # ...and the training block has detail (grey std in [0, 1] units)
    block_contrast: float = 2.0  # ...its RMS at most this many times that detail (flat blocks agree by chance)...
    ncc_floor: float = 0.70    # ...and the correlation at least this, however noisy the pair (smooth 8-px blocks reach 0.6 by chance)
    whole_agree: float = 0.5   # a whole copy: Carlini's test, and this share of the detailed area copied
    align: bool = True         # register the pair (shifted and rescaled copies)
