"""The reconstruction search: it fits the conditioning to the image's own denoising loss, draws from
fresh seeds, and reports the same search's rate on images the model never saw."""

from __future__ import annotations

import pytest
from PIL import Image

from imgextract.errors import InputError


def test_search_fits_the_conditioning_and_draws_the_memorized_image_from_fresh_seeds(memorizing_model):
    from imgextract.models.pipelines import load_pipeline
    from imgextract.progress import drain
    from imgextract.stages.generate import sample_seed
    from imgextract.stages.reconstruct import Budget, reconstruct
    from imgextract.demo.toy import training_set
    model, cfg = memorizing_model
    loaded = load_pipeline(str(model), device="cpu")
    work = Image.open(model / "train" / "astronaut.png").convert("RGB")
    budget = Budget(steps=40, samples=4)
    flags = [p.requires_grad for p in loaded.pipe.unet.parameters()]
    attempt = drain(reconstruct(loaded, work, budget, 25, 3.0, (32, 32), "w0000"))
    assert attempt.reconstructed and attempt.kind == "whole"
    once = training_set(cfg)[0][1]        # seen once: the empty prompt does not draw it, so the search has work
    fitted = drain(reconstruct(loaded, once.image, budget, 25, 3.0, (32, 32), "w0001"))
    assert fitted.loss_last < fitted.loss_first            # it lowered that image's denoising loss (by how much
    #                                                        is the toy's: 0.63 -> 0.54 on one float path, > 20% on another)
    assert attempt.seeds == [sample_seed(0, "reconstruct:w0000", i) for i in range(4)]
    again = drain(reconstruct(loaded, work, budget, 25, 3.0, (32, 32), "w0000"))
    assert again.record() == attempt.record()              # repeatable: the search's noise is seeded by its tag
    assert [p.requires_grad for p in loaded.pipe.unet.parameters()] == flags   # the model is left as it was


def test_null_rate_counts_the_calibration_images_the_search_draws(memorizing_model):
    from imgextract.demo.photos import faces
    from imgextract.models.pipelines import load_pipeline
    from imgextract.progress import drain
    from imgextract.stages.reconstruct import Budget, meaning, null_rate
    model, cfg = memorizing_model
    loaded = load_pipeline(str(model), device="cpu")
    astronaut = Image.open(model / "train" / "astronaut.png").convert("RGB")
    images = faces(2, cfg.size) + [("astronaut", astronaut)]   # one the model did learn, as a positive control
    r = drain(null_rate(loaded, images, Budget(steps=20, samples=2), 25, 3.0, (32, 32)))
    assert r["images"] == 3 and [p["image"] for p in r["per_image"]] == ["face-000", "face-001", "astronaut"]
    assert r["per_image"][2]["reconstructed"]
    assert r["reconstructed"] == sum(p["reconstructed"] for p in r["per_image"]) >= 1
    assert r["ci_low"] <= r["rate"] <= r["ci_high"]
    assert "proves little" in meaning(True, r)


def test_budget_is_checked():
    from imgextract.stages.settings import Budget, validate_budget
    with pytest.raises(InputError, match="reconstruction samples is 0"):
        validate_budget(Budget(samples=0))
    with pytest.raises(InputError, match="learning rate"):
        validate_budget(Budget(lr=0.0))


def test_wilson_interval():
    from imgextract.stats import wilson_ci
    lo, hi = wilson_ci(0, 12)
    assert lo == 0.0 and 0.2 < hi < 0.3           # 0 of 12 still allows a rate up to ~24%
    lo, hi = wilson_ci(12, 12)
    assert 0.7 < lo < 0.8 and hi == 1.0
    assert wilson_ci(0, 0) == (0.0, 1.0)
