"""The toy's transformer (demo/toy_models.py's dit): the scan judges what it draws as brute force does."""

from imgextract.demo.toy import training_set


def test_the_scan_names_what_brute_force_names_on_the_transformer_toys_samples(tmp_path, memorizing_dit):
    """The transformer toy (an SD3 pipeline drawn through the sd3 family), its duplicated image's caption and
    held-out captions: the scan's copy verdict on every sample is the one judging it against every training image
    by brute force gives. The duplicated image is drawn as a copy in some sample: a margin measured wide (see
    docs/toy.md for the rates; what one run learns is a figure, the equality is the test)."""
    from helpers import reference_copies, scanned_copies, sweep_and_scan
    model, cfg = memorizing_dit
    items, held = training_set(cfg)
    captions = [items[0].caption, items[1].caption] + [h.caption for h in held[:2]]
    train = model / "train"
    m = sweep_and_scan(model, captions, train, tmp_path, steps=20, batch_size=16)
    got = scanned_copies(m)
    assert len(got) == 4 * len(captions)
    reference = reference_copies(sorted(got), train)
    assert got == reference
    copied = [g for g, found in reference.items() if f"{items[0].name}.png" in found]
    assert copied, reference
    print(f"samples copying the 60x image (a figure of this run): {len(copied)} of {len(got)}")
