"""Scan: test every generation against its nearest training images.

For each generation: the index's embedder finds the k nearest training images, then each
candidate gets Carlini's distances (:mod:`imgextract.distance`: tiled L2, plain L2), the
perceptual-hash distances of :mod:`imgextract.hashes` and the copy verdict of
:mod:`imgextract.copies` (whole, portion or template, registered first). ``memorized`` is
``copy_kind != "none"`` under the default criterion ``copy``; ``tiled`` is Carlini's plain test.

Why it is fast: distances are exact integer sums (``distance.exact_distances``), and a candidate is
first tested on its box thumbnail from the index, no decode: a lower bound on its tiled L2, and the
copy screen (``copies.screen``: the verdict's tests on thumbnail windows, measured rather than
proven); only candidates whose bound is under ``exact_below`` (default: threshold + 0.10) or that
pass the screen are decoded and measured, and only those the screen passes or whose tiled L2 is
under the threshold are judged (registration is the verdict's main cost). Rows say which:
``exact`` True means ``tiled_l2`` and ``l2`` are full-resolution values, False means they are
lower bounds at or above ``exact_below`` (so no verdict can change). Carlini's relative
distance divides a candidate's L2 by the mean L2 to the ``relative_n`` nearest retrieved
training images. Under the ``copy`` and ``tiled`` criteria it is given for memorized candidates
only (NaN elsewhere), and the neighbours' L2 come from their thumbnails (lower bounds), so the
value is an *upper bound* on Carlini's (below 1 still proves "much closer to this image than to
its neighbours") and costs no decode. Under the ``relative``, ``either`` and ``both`` criteria
it is exact for every candidate and pruning is off. Generations are decoded, hashed and
tested by a thread pool, pipelined by chunks; rows keep the input order.

Work runs over shards of generations (a run's sample shards, or chunks of a plain folder);
each shard's matches land in ``scan/<params>/shard-NNNNN.parquet`` so a scan resumes, and
the same parameters never mix with others.

Modules: ``params`` (``ScanParams``: the defaults and their checks), ``plan`` (which shards), ``matching``
(one shard's candidates and verdicts), ``summary`` (assembly and counts), ``run`` (``scan``, the driver).
Names are imported from their module on first use, so reading ``ScanParams``'s defaults (the command
line's options) costs no numpy or pandas.
"""

from __future__ import annotations

import importlib

_HOME = {
    **dict.fromkeys(["CHUNK", "Described", "Generation", "TrainingImages", "as_generation", "described",
                     "grade", "load_generation", "match_generation", "match_image", "relative_distance", "scan_shard"],
                    "matching"),
    **dict.fromkeys(["CRITERIA", "EXACT_MARGIN", "KIND_ORDER", "MATCH_COLUMNS", "MAX_GRID", "SCAN_LAYOUT",
                     "ScanParams", "is_memorized", "validate_params"], "params"),
    **dict.fromkeys(["FOLDER_SHARD", "ScanPlan", "default_out", "plan_scan"], "plan"),
    **dict.fromkeys(["assemble", "copy_counts", "descriptor_shares", "duplication_view", "family_view",
                     "strongest_first", "summarize"], "summary"),
    "scan": "run",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
