"""Uncertainty of the rates imgextract reports: one bootstrap for means over captions, and Wilson's
interval for a count of successes (a reconstruction rate)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean, resampling the values with replacement."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def wilson_ci(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate ``hits / n``: sound at 0 of 12 and 12 of 12, where the
    bootstrap of a constant collapses to a point."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: the chance a positive outranks a negative, ties counting half
    (Mann–Whitney); the convention of sklearn's ``roc_auc_score``."""
    from scipy.stats import rankdata
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def tpr_at_fpr(labels, scores, fpr: float) -> float:
    """The highest true-positive rate of any threshold whose false-positive rate is at most ``fpr``
    (a threshold flags scores >= it; tied scores are flagged together)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]          # the end of each run of tied scores
    tp, fp = np.cumsum(ys)[last], np.cumsum(~ys)[last]
    ok = fp / neg <= fpr
    return float(tp[ok].max() / pos) if ok.any() else 0.0


def bootstrap_metric(labels, scores, metric, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``metric(labels, scores)``, positives and negatives resampled
    separately (every resample keeps both classes at their sizes)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if not len(pos) or not len(neg):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(metric(y[idx], s[idx]))
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
