"""The scan's settings and their checks: what a scan tests, and what it calls memorized.

``ScanParams`` owns the scan's defaults (the copy rule's come from ``rule.CopyRule``) and checks itself
when made, so a bad value is one error line wherever it was given (an option, a run config, a caller).
No numpy here: the command line reads these defaults without importing it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imgextract.errors import InputError
from imgextract.rule import CopyRule

if TYPE_CHECKING:
    from imgextract.index.store import TrainingIndex

MATCH_COLUMNS = ["generation_path", "caption_id", "caption", "sample_index", "seed", "train_id", "train_path",
                 "train_caption", "rank", "similarity", "tiled_l2", "l2", "phash_distance", "dhash_distance",
                 "whash_distance", "relative_l2", "exact", "pixels", "copy_kind", "copied_share", "copied_area",
                 "copy_mask", "copy_offset", "template_members", "template_mask", "template_mse",
                 "replication", "replication_score", "memorized"]
# copy: the copy verdict (copies.py: whole, portion, template); tiled: Carlini's plain tiled L2 < threshold;
# relative: Carlini's relative distance; either / both: tiled or / and relative, as Carlini et al. combine them
CRITERIA = ("copy", "tiled", "relative", "either", "both")
KIND_ORDER = {"whole": 3, "template": 2, "portion": 1, "none": 0}


@dataclass(frozen=True)
class ScanParams:
    index: str
    k: int = 10                     # nearest training images tested per generation
    threshold: float = CopyRule.threshold
    grid: int = CopyRule.grid
    relative_n: int = 50            # Carlini et al. §5.1: neighbours in the relative distance (0 = off)
    alpha: float = 0.5              # Carlini et al.'s: relative distance = L2 / (alpha * mean L2 to the n nearest)
    relative_threshold: float = 1.0
    criterion: str = "copy"         # copy | tiled | relative | either | both
    exact_below: float | None = None  # tiled L2 measured exactly below this (None: threshold + 0.10)
    min_share: float = CopyRule.min_share   # a copy covers this share of the image's detail, at least
    descriptor: str | None = None   # models.descriptors spec (sscd:PATH, absolute): adds sscd_similarity per row

    def __post_init__(self):
        validate_params(self)

    def rule(self) -> CopyRule:
        return CopyRule(threshold=self.threshold, grid=self.grid, min_share=self.min_share)

    @property
    def exact_limit(self) -> float:
        """Candidates whose thumbnail bound is at or above this keep the bound instead of an exact value."""
        return max(self.threshold, self.threshold + EXACT_MARGIN if self.exact_below is None else self.exact_below)

    def key(self, index: TrainingIndex) -> str:
        """Same parameters on the same index (however it was named) → the same scan folder."""
        params = {**asdict(self), "index": str(Path(index.path).resolve())}
        if params["descriptor"] is None:
            del params["descriptor"]    # keys of scans without one stay as they were
        blob = json.dumps({**params, "layout": SCAN_LAYOUT, "embedder": index.embedder.get("spec"),
                           "weights": index.embedder.get("weights_fingerprint")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


EXACT_MARGIN = 0.10

MAX_GRID = 64
SCAN_LAYOUT = 4  # 2: folder shards keyed by file; 3: exact and pixels columns; 4: the copy verdict. Not mixed


def validate_params(params: ScanParams) -> None:
    """Every scan parameter checked before any work (and before the index is opened)."""
    if params.k < 1:
        raise InputError(f"-k {params.k}", f"test at least one candidate (-k 1 or more; {ScanParams.k} is the default)")
    if not 1 <= params.grid <= MAX_GRID:
        raise InputError(f"--grid {params.grid}", f"use a tile grid from 1 to {MAX_GRID} per side "
                                                  f"({CopyRule.grid} is Carlini et al.'s)")
    if not 0 < params.threshold <= 1:
        raise InputError(f"--threshold {params.threshold}",
                         f"use a tiled-L2 threshold in (0, 1]; {CopyRule.threshold} is the default")
    if params.relative_n < 0:
        raise InputError(f"--relative-n {params.relative_n}", "use 0 (off) or a positive number of neighbours")
    if params.alpha <= 0:
        raise InputError(f"--alpha {params.alpha}", f"use a positive alpha ({ScanParams.alpha} is Carlini et al.'s)")
    if params.criterion not in CRITERIA:
        raise InputError(f"unknown criterion '{params.criterion}'", f"use one of {', '.join(CRITERIA)}")
    if params.exact_below is not None and not 0 < params.exact_below <= 2:
        raise InputError(f"--exact-below {params.exact_below}",
                         "use a tiled-L2 value in (0, 2] (values below the threshold count as the threshold)")
    if not 0 < params.min_share <= 1:
        raise InputError(f"--min-share {params.min_share}", "use a share of the image's detailed area in (0, 1]; "
                         f"{CopyRule.min_share} is the default")
    if params.criterion not in ("tiled", "copy") and params.relative_n < 1:
        raise InputError(f"criterion '{params.criterion}' needs the relative distance",
                         f"give --relative-n >= 1 (default {ScanParams.relative_n})")


def is_memorized(tiled: float, relative: float, kind: str, params: ScanParams) -> bool:
    by_tiled = tiled < params.threshold
    by_relative = bool(relative < params.relative_threshold) if not math.isnan(relative) else False
    return {"copy": kind != "none", "tiled": by_tiled, "relative": by_relative, "either": by_tiled or by_relative,
            "both": by_tiled and by_relative}[params.criterion]
