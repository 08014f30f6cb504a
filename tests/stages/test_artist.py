"""The artist's sampling plan: a work's training captions weighted by their copies, within the check's budget."""

from __future__ import annotations


def test_sampling_plan_weights_training_captions_by_their_copies_within_the_budget():
    from imgextract.stages.artist import EXTRA_CAP, sampling_plan
    copies = [{"caption": "a"}] * 5 + [{"caption": "b"}] * 2 + [{"caption": None}]
    plan = sampling_plan(3, ("my title", "file name"), copies, 8)
    assert [(p.caption_id, p.prompt, p.source, p.samples, p.copies) for p in plan] == [
        ("w0003-t0", "a", "training caption", 17, 5), ("w0003-t1", "b", "training caption", 7, 2),
        ("w0003", "my title", "file name", 8, 0)]
    assert sum(p.samples for p in plan) == 8 * (1 + EXTRA_CAP)
    # the artist's own prompt equal to a training caption is drawn once, as that caption
    same = sampling_plan(0, ("b", "sidecar text"), copies, 4)
    assert [(p.prompt, p.samples) for p in same] == [("a", 9), ("b", 7)]
    assert [(p.prompt, p.samples) for p in sampling_plan(0, ("x", "file name"), [], 4)] == [("x", 4)]
