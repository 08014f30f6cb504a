"""The collection test: its p-value against scipy's permutation test, its null uniform, its power, and what a
small set can show."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import permutation_test

from imgextract.dataset_inference import collection_test, null_p_values, permutation_p


def _scipy_p(a, b):
    return permutation_test((a, b), lambda x, y: x.mean() - y.mean(), permutation_type="independent",
                            alternative="greater", n_resamples=np.inf).pvalue


@pytest.mark.parametrize("n_works,n_refs", [(5, 3), (6, 6), (8, 7)])
def test_the_exact_p_value_is_scipys(n_works, n_refs):
    rng = np.random.default_rng(n_works * 10 + n_refs)
    for shift in (0.0, 0.8, 2.0):
        a, b = rng.normal(shift, 1, n_works), rng.normal(0, 1, n_refs)
        p, min_p, exact, count = permutation_p(a, b)
        assert exact and count == math.comb(n_works + n_refs, n_works) and min_p == 1 / count
        assert p == pytest.approx(_scipy_p(a, b), rel=1e-12)
    ties = np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 2.0])   # a relabelling as extreme counts, ties included
    assert permutation_p(*ties)[0] == pytest.approx(_scipy_p(*ties), rel=1e-12)


def test_monte_carlo_beyond_the_exact_limit_agrees_with_the_exact_answer():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 20), rng.normal(0, 1, 20)       # C(40, 20) relabellings: Monte Carlo
    p, min_p, exact, count = permutation_p(a, b, seed=1)
    assert not exact and min_p == 1 / (count + 1)
    ref = permutation_test((a, b), lambda x, y: x.mean() - y.mean(), permutation_type="independent",
                           alternative="greater", n_resamples=99_999, random_state=7).pvalue
    assert abs(p - ref) < 0.02, (p, ref)


def test_the_null_is_uniform_and_a_real_difference_is_found():
    """Features of one distribution on both sides: p under alpha about alpha of the time (binomial margins,
    500 seeded sets); the works a standard deviation lower on two of four features: found."""
    rng = np.random.default_rng(0)
    null = []
    for s in range(500):
        x = rng.normal(size=(32, 4))
        null.append(collection_test(x[:16], x[16:], seed=s).p_value)
    null = np.array(null)
    assert 0.02 <= (null < 0.05).mean() <= 0.09, (null < 0.05).mean()
    assert 0.35 <= (null < 0.5).mean() <= 0.65
    found = 0
    for s in range(40):
        works, refs = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
        works[:, :2] -= 1.0
        found += collection_test(works, refs, seed=s).p_value < 0.01
    assert found >= 30, found


def test_a_small_portfolio_says_how_little_it_can_show():
    """10 works and 6 references: half fit the direction, so 5 + 3 are tested, and no p under 1/56 exists;
    with no fitting (the prior direction) all 16 are tested."""
    rng = np.random.default_rng(1)
    works, refs = rng.normal(-3, 1, (10, 3)), rng.normal(0, 1, (6, 3))
    t = collection_test(works, refs)
    assert (t.test_works, t.test_refs, t.fit_works, t.fit_refs) == (5, 3, 5, 3)
    assert t.min_p == 1 / math.comb(8, 3) and t.p_value >= t.min_p
    prior = collection_test(works, refs, fit_share=0)
    assert (prior.test_works, prior.test_refs) == (10, 6) and prior.min_p == 1 / math.comb(16, 6)
    assert prior.p_value < 0.01 and prior.auc == 1.0
    # the prior direction uses no labels: swapping the sides reverses nothing but which side is tested as works
    swapped = collection_test(refs, works, fit_share=0)
    assert np.allclose(np.r_[prior.scores[10:], prior.scores[:10]], swapped.scores)


def test_null_splits_are_seeded_and_each_is_the_test_between_two_halves():
    """Each null p-value is the collection test between two disjoint halves of the references (rebuilt here from
    the recorded split seed); the same seed gives the same p-values, another seed other splits."""
    refs = np.random.default_rng(2).normal(size=(24, 3))
    a, b = null_p_values(refs, 5, seed=4), null_p_values(refs, 5, seed=4)
    assert a == b and len(a) == 5 and all(0 < p <= 1 for p in a)
    for s, p in enumerate(a):
        order = np.random.default_rng([4, s, 1]).permutation(24)
        assert p == collection_test(refs[order[:12]], refs[order[12:]], seed=4 + s).p_value
    assert null_p_values(refs, 5, seed=5) != a
