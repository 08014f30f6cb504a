"""The collection test of dataset inference: were these works, as a set, in the training data?

Per-image membership inference is unreliable on real models (CopyMark, 2024); a collection of an
owner's works can still be tested (Dubiński et al., CDI, CVPR 2025). Each image has a row of
membership features (lower = more member-like: the model denoises what it was trained on better).
A direction that combines them is fitted on one split of the works and the references, and the
held-out images are scored with it; a one-sided permutation test then asks whether the held-out
works outscore the held-out references more than a random relabelling would. Exact over every
relabelling when there are few enough (small portfolios: the smallest p-value the set *can* show is
reported beside the p-value), Monte Carlo otherwise.

``fit_share = 0`` fits nothing: the prior direction (every feature lower for members, each
standardised over all images, which uses no labels) scores every image, so a small portfolio keeps
all its images for the test.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from imgextract.stats import roc_auc

MAX_EXACT = 20_000      # relabellings enumerated exactly up to this many; Monte Carlo beyond
DRAWS = 20_000          # Monte Carlo relabellings


@dataclass
class CollectionTest:
    """One collection test: its p-value, effect and what it was computed on."""

    p_value: float
    min_p: float                     # the smallest p-value these held-out sizes can give
    auc: float                       # chance a held-out work outscores a held-out reference
    cohen_d: float                   # the same difference in pooled standard deviations
    exact: bool
    relabellings: int
    weights: list[float]
    scores: np.ndarray               # every image's score (works first, then references)
    held_out: np.ndarray             # bool per image: tested (not used to fit the direction)
    fit_works: int = 0
    fit_refs: int = 0
    test_works: int = 0
    test_refs: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _standardise(fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = fit.mean(0)
    sd = fit.std(0)
    return mean, np.where(sd > 1e-12, sd, 1.0)


def fit_direction(works: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sd, weights): a diagonal discriminant, each feature weighed by the fitting works' mean less the
    fitting references', in standard deviations of both, so a member-like image scores higher. Few images
    per side rule out a full covariance; the diagonal keeps the direction stable."""
    both = np.concatenate([works, refs])
    mean, sd = _standardise(both)
    zw, zr = (works - mean) / sd, (refs - mean) / sd
    w = zw.mean(0) - zr.mean(0)      # negative where the works sit lower: their scores come out higher
    norm = np.abs(w).sum()
    w = w / norm if norm > 1e-12 else np.full(both.shape[1], 1.0 / both.shape[1])
    return mean, sd, w


def prior_direction(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sd, weights) with no labels used: every feature standardised over all images, lower = member."""
    mean, sd = _standardise(features)
    return mean, sd, np.full(features.shape[1], -1.0 / features.shape[1])


@lru_cache(maxsize=8)
def _combinations(n: int, k: int) -> np.ndarray:
    total = math.comb(n, k)
    return np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), k)), int,
                       count=total * k).reshape(total, k)


def permutation_p(works: np.ndarray, refs: np.ndarray, seed: int = 0) -> tuple[float, float, bool, int]:
    """(p, smallest attainable p, exact, relabellings): one-sided, H1 = the works' scores are higher.

    The statistic is the works' sum of scores; p counts relabellings at least as extreme, the observed one
    included, so p is never 0."""
    pooled = np.concatenate([works, refs]).astype(float)
    n, k = len(pooled), len(works)
    observed = works.sum()
    tol = 1e-9 * max(1.0, float(np.abs(pooled).sum()))
    total = math.comb(n, k)
    if total <= MAX_EXACT:
        sums = pooled[_combinations(n, k)].sum(1)
        return float((sums >= observed - tol).sum() / total), 1.0 / total, True, total
    rng = np.random.default_rng(seed)
    hits, chunk = 0, max(1, 2_000_000 // n)      # bounded memory: at most 2M draws of a score at once
    for start in range(0, DRAWS, chunk):
        m = min(chunk, DRAWS - start)
        sums = rng.permuted(np.broadcast_to(pooled, (m, n)), axis=1)[:, :k].sum(1)
        hits += int((sums >= observed - tol).sum())
    return float((1 + hits) / (1 + DRAWS)), 1.0 / (1 + DRAWS), False, DRAWS


def cohen_d(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 1e-12 else float("nan")


def split(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask of the images that fit the direction: ``share`` of them, at least one, and one left to test."""
    fit = np.zeros(n, bool)
    if share <= 0:
        return fit
    m = min(n - 1, max(1, int(share * n + 0.5)))   # half up, not to even: 5 images fit 3
    fit[rng.permutation(n)[:m]] = True
    return fit


def collection_test(works: np.ndarray, refs: np.ndarray, fit_share: float = 0.5, seed: int = 0) -> CollectionTest:
    """The test on feature rows (n_works, F) and (n_refs, F); ``seed`` draws the split (recorded)."""
    works, refs = np.asarray(works, float), np.asarray(refs, float)
    rng = np.random.default_rng(seed)
    fw, fr = split(len(works), fit_share, rng), split(len(refs), fit_share, rng)
    if fit_share > 0:
        mean, sd, w = fit_direction(works[fw], refs[fr])
    else:
        mean, sd, w = prior_direction(np.concatenate([works, refs]))
    scores = ((np.concatenate([works, refs]) - mean) / sd) @ w
    held = ~np.concatenate([fw, fr])
    sw, sr = scores[:len(works)][~fw], scores[len(works):][~fr]
    p, min_p, exact, count = permutation_p(sw, sr, seed)
    labels = np.r_[np.ones(len(sw), bool), np.zeros(len(sr), bool)]
    return CollectionTest(p_value=p, min_p=min_p, auc=roc_auc(labels, np.r_[sw, sr]), cohen_d=cohen_d(sw, sr),
                          exact=exact, relabellings=count, weights=[float(x) for x in w], scores=scores, held_out=held,
                          fit_works=int(fw.sum()), fit_refs=int(fr.sum()), test_works=len(sw), test_refs=len(sr),
                          seed=seed)


def null_p_values(refs: np.ndarray, splits: int, fit_share: float = 0.5, seed: int = 0) -> list[float]:
    """The same test between two disjoint random halves of the references, ``splits`` times: under the null
    the p-values are uniform, so the share under alpha is the test's measured false-positive rate."""
    refs = np.asarray(refs, float)
    out = []
    for s in range(splits):
        rng = np.random.default_rng([seed, s, 1])
        order = rng.permutation(len(refs))
        half = len(refs) // 2
        out.append(collection_test(refs[order[:half]], refs[order[half:]], fit_share, seed=seed + s).p_value)
    return out
