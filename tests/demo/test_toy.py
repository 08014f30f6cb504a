"""The toy memorizing model: spec validation, resumable training, and real memorization."""

import csv
from pathlib import Path

import numpy as np
import pytest

from imgextract import distance
from imgextract.errors import InputError
from imgextract.demo.toy import DEFAULT_IMAGES, ToyConfig, parse_spec, train, training_set


def test_parse_spec():
    assert parse_spec("100x1,10x2,1x3") == [100, 10, 10, 1, 1, 1]
    with pytest.raises(InputError, match="bad part"):
        parse_spec("100x1,ten")


def test_spec_naming_too_many_images_is_refused():
    with pytest.raises(InputError, match=f"names 41 images but the {len(DEFAULT_IMAGES)} built-in"):
        training_set(ToyConfig(duplicates="1x41"))


@pytest.mark.parametrize("size", [30, 8, 512])
def test_size_the_model_cannot_take_is_refused(size):
    with pytest.raises(InputError, match=f"--size {size}"):
        training_set(ToyConfig(size=size))


def test_default_images_are_distinct_and_not_flat():
    """Each built-in image is far (tiled L2 > 0.2) from every other one at 32x32."""
    items, rest = training_set(ToyConfig(duplicates=f"1x{len(DEFAULT_IMAGES)}"))
    arrays = np.stack([distance.to_array(it.image) for it in items + rest])
    for i in range(len(arrays)):
        others = np.delete(arrays, i, axis=0)
        assert distance.tiled_l2(arrays[i][None], others).min() > 0.2, items[i].name


def _final_weights(folder, denoiser):
    from safetensors.numpy import load_file
    return load_file(str(folder / denoiser / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("arch,denoiser", [("unet", "unet"), ("dit", "transformer")])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, arch, denoiser):
    cfg = ToyConfig(duplicates="3x1,1x2", vae_steps=3, unet_steps=4, checkpoint_every=0, batch_size=4, arch=arch)
    list(train(tmp_path / "straight", cfg))
    gen = train(tmp_path / "resumed", cfg)
    for _ in range(5):  # 3 VAE steps and 2 UNet steps, then the process "dies"
        next(gen)
    gen.close()
    assert (tmp_path / "resumed" / ".checkpoint.pt").is_file()
    list(train(tmp_path / "resumed", cfg))
    a, b = _final_weights(tmp_path / "straight", denoiser), _final_weights(tmp_path / "resumed", denoiser)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "train" / "copies.csv")))
    assert [(r["file"], r["copies"]) for r in rows] == [("astronaut.png", "3"), ("rocket.png", "1"),
                                                        ("chelsea.png", "1")]


def test_duplicated_image_is_regenerated_and_held_out_captions_are_not(memorizing_model):
    from imgextract.stages.generate import render
    from imgextract.models.pipelines import load_pipeline
    out, cfg = memorizing_model
    items, held = training_set(cfg)
    loaded = load_pipeline(str(out), device="cpu")
    n = 8

    def tiled_to(item, caption):
        images = render(loaded, [caption] * n, list(range(n)), 25, 3.0, (32, 32))
        target = distance.to_array(item.image)
        return np.array([distance.tiled_l2(distance.to_array(im), target) for im in images])

    dup = tiled_to(items[0], items[0].caption)
    assert items[0].copies == 60
    assert (dup < 0.15).mean() >= 0.75, dup
    for item in held[:3]:  # captions and images the model never saw
        d = tiled_to(item, item.caption)
        assert (d >= 0.15).all(), (item.name, d)


def test_template_families_are_parsed_and_written(tmp_path):
    from imgextract.demo.toy import parse_families
    assert parse_families("100x1,3t5") == [5, 5, 5] and parse_spec("100x1,3t5") == [100]
    with pytest.raises(InputError, match="at least 2 members"):
        parse_spec("1t1")
    items, _ = training_set(ToyConfig(duplicates="1x2,2t3"))
    families = [it.family for it in items]
    assert families == ["", "", "workshop", "workshop", "workshop", "galaxies", "galaxies", "galaxies"]


def test_the_scan_names_what_brute_force_names_on_a_toys_samples_and_made_templates(tmp_path, memorizing_model):
    """The memorizing toy's samples, scanned against its training images plus two template families of 5
    (the toy's family form: a shared background, each member its own photograph in the window). Whatever
    the toy draws on this machine's float kernels (one run of a template toy drew a training retina under
    the held-out caption 'close-up of a few stone steps'), the scan names exactly the copies that judging
    every sample against every training image names. A template by construction (the workshop background,
    a photograph no member has in the window) is the workshop family's template; a photograph the model
    never saw is no copy. (Before: a template toy trained for 2 min; what a toy learns is a figure of
    scripts/eval_toy.py and the demo, not a test.)"""
    import pandas as pd

    from helpers import reference_copies, scanned_copies, sweep_and_scan
    from imgextract.app.commands import run_scan
    from imgextract.demo.composites import square, templated
    from imgextract.demo.photos import photo
    from imgextract.demo.toy import template_families
    model, cfg = memorizing_model
    items, held = training_set(cfg)
    train = tmp_path / "train"
    train.mkdir()
    for it in items + template_families([5, 5], cfg.size):
        it.image.save(train / f"{it.name}.png")
        (train / f"{it.name}.txt").write_text(it.caption)
    workshop = [p.stem for p in train.glob("workshop-*.png")]
    captions = [items[0].caption] + [(train / f"{w}.txt").read_text() for w in workshop] + [h.caption for h in held[:4]]
    m = sweep_and_scan(model, captions, train, tmp_path / "sweep")
    got = scanned_copies(m)
    assert len(got) == 4 * len(captions)
    assert got == reference_copies(sorted(got), train)
    kinds = m[m["copy_kind"] != "none"].groupby("caption")["copy_kind"].value_counts()
    print(f"copies drawn per caption (a figure of this run, not asserted): {kinds.to_dict()}")

    made = tmp_path / "made"
    made.mkdir()
    background = square(photo("stereo_motorcycle_left"), cfg.size)
    templated(background, square(photo("flower"), cfg.size)).save(made / "template.png")
    held[0].image.save(made / "unseen.png")
    every = len(list(train.glob("*.png")))   # every training image is a candidate: the reference has no top-k
    run_scan(made, str(tmp_path / "sweep" / "index"), tmp_path / "made-scan", k=every, threshold=0.15, grid=4,
             relative_n=0, say=str)
    got = scanned_copies(pd.read_parquet(tmp_path / "made-scan" / "matches.parquet"))
    assert got == reference_copies(sorted(got), train)
    by_name = {Path(g).name: v for g, v in got.items()}
    assert by_name["unseen.png"] == {}
    members = {n for n, kind in by_name["template.png"].items() if kind == "template"}
    assert len(members) >= 2 and all(n.startswith("workshop-") for n in members), by_name["template.png"]

