"""Dataset inference on a toy trained on a known set: its training images against photographs it never saw, the
null between halves of those photographs, and the memorized images at the top."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import permutation_test

from imgextract.app.membership import run_membership
from imgextract.stages.settings import MembershipSettings, SamplingConfig


@pytest.fixture(scope="module")
def toy_result(tmp_path_factory, member_model, never_seen):
    model, _ = member_model
    out = tmp_path_factory.mktemp("membership") / "membership.json"
    said: list[str] = []
    result = run_membership(model / "train", never_seen, str(model), out, MembershipSettings(null_splits=20),
                            SamplingConfig(device="cpu"), say=said.append)
    return result, out, said


def test_the_training_images_are_told_from_never_seen_photographs(toy_result):
    result, out, said = toy_result
    assert result["works"] == 12 and result["references"] == 24
    assert result["p_value"] < 0.01, result["test"]
    assert result["verdict"].startswith("Evidence that these works were in the training set")
    # the p-value is the permutation test's on the held-out scores, recomputed here with scipy
    images = result["images"]
    works = np.array([r["score"] for r in images if r["side"] == "works" and r["held_out"]])
    refs = np.array([r["score"] for r in images if r["side"] == "references" and r["held_out"]])
    assert len(works) == result["test"]["test_works"] == 6 and len(refs) == result["test"]["test_refs"] == 12
    ref = permutation_test((works, refs), lambda a, b: a.mean() - b.mean(), permutation_type="independent",
                           alternative="greater", n_resamples=np.inf)
    assert result["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    # captions on one side only (the toy's sidecars) would favour that side: every image is scored unconditionally
    assert result["conditioning"].startswith("the unconditional branch")
    assert any("scored unconditionally" in line for line in said)
    assert json.loads(out.read_text())["p_value"] == result["p_value"]
    page = out.with_suffix(".html").read_text()
    assert "Evidence that these works were in the training set" in page and "false-positive rate" in page


def test_halves_of_never_seen_photographs_are_not_told_apart(toy_result):
    """The null shipped with the command: two disjoint halves of the references, 20 seeded splits."""
    result, _, _ = toy_result
    null = result["null"]["p_values"]
    assert len(null) == 20
    assert sum(p >= 0.05 for p in null) >= 19, null
    assert result["null"]["false_positive_rate"] == sum(p < 0.01 for p in null) / 20


def test_the_memorized_images_score_highest(toy_result, member_model):
    """The two images seen 6 times each score above every image seen once and every photograph never seen."""
    result, _, _ = toy_result
    model, _ = member_model
    import pandas as pd
    copies = dict(pd.read_csv(model / "train" / "copies.csv")[["file", "copies"]].itertuples(index=False))
    ranked = sorted(result["images"], key=lambda r: -r["score"])
    top = [r["path"].rsplit("/", 1)[-1] for r in ranked[:2]]
    assert sorted(copies[name] for name in top) == [6, 6], ranked[:4]
