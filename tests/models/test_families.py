"""The family registry: every tiny build of a family is told from its files before loading and from the loaded
pipeline, drawn at the size its own config files give, and refused a sampler or size that does not fit it."""

from __future__ import annotations

import json

import pytest

from imgextract.demo.families import TINY, save_tiny_family
from imgextract.errors import InputError
from imgextract.models.families import BY_NAME, FAMILIES, SCHEDULERS, family_of_folder, require, unregistered
from imgextract.models.pipelines import load_pipeline, native_size, set_scheduler
from imgextract.stages.generate import SamplingConfig, render, resolve_sampling


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-families")
    return {f: save_tiny_family(f, root / f) for f in TINY}


def test_every_entry_is_consistent():
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    for f in FAMILIES:
        assert f.steps >= 1 and f.guidance >= 0 and f.schedulers and set(f.schedulers) <= set(SCHEDULERS)
        flow = set(f.objectives) == {"flow"}
        assert flow == all(SCHEDULERS[s].startswith("FlowMatch") for s in f.schedulers), f.name
    assert set(TINY) == set(BY_NAME)   # every family has a tiny build the tests draw from


@pytest.mark.parametrize("name", TINY)
def test_a_family_is_told_before_loading_and_draws_at_its_configs_size(tiny, name):
    folder = tiny[name]
    assert family_of_folder(folder).name == name          # from model_index.json and configs: nothing loaded
    loaded = load_pipeline(str(folder), "cpu")
    assert loaded.family.name == name                     # from the loaded pipeline
    vae = json.loads((folder / "vae" / "config.json").read_text())
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    denoiser = "unet" if (folder / "unet").is_dir() else "transformer"
    side = 128 if name.startswith("flux") else json.loads((folder / denoiser / "config.json").read_text())["sample_size"]
    assert native_size(loaded.pipe, loaded.family) == (side * factor, side * factor)
    cfg = resolve_sampling(SamplingConfig(), loaded)
    assert (cfg.steps, cfg.guidance) == (loaded.family.steps, loaded.family.guidance)
    image = render(loaded, ["a red rocket"], [3], 2, cfg.guidance, (side * factor, side * factor))[0]
    assert image.size == (side * factor, side * factor)   # PixArt's resolution binning off: never resized


def test_a_sampler_or_size_that_does_not_fit_the_family_is_refused(tiny):
    flux = load_pipeline(str(tiny["flux-schnell"]), "cpu")
    with pytest.raises(InputError, match="scheduler 'ddim' does not fit FLUX.1 schnell"):
        set_scheduler(flux.pipe, "ddim", flux.family)
    assert set_scheduler(flux.pipe, "flow-euler", flux.family) == "FlowMatchEulerDiscreteScheduler"
    sd3 = load_pipeline(str(tiny["sd3"]), "cpu")
    with pytest.raises(InputError, match="multiples of 4"):   # VAE factor 2 x the transformer's 2x2 patches
        resolve_sampling(SamplingConfig(size=(34, 34)), sd3)
    alpha = load_pipeline(str(tiny["pixart-alpha"]), "cpu")
    with pytest.raises(InputError, match="--steps 1 is fewer than a PixArt-α pipeline takes"):
        resolve_sampling(SamplingConfig(steps=1), alpha)   # its one-step path is DMD's, not a sampler's
    sd1 = load_pipeline(str(tiny["sd1"]), "cpu")
    with pytest.raises(InputError, match="flow-euler' does not fit Stable Diffusion 1.x"):
        set_scheduler(sd1.pipe, "flow-euler", sd1.family)


def test_what_reads_the_denoiser_refuses_a_family_outside_the_registry_saying_what_still_works():
    for family in FAMILIES:
        require(family, "check --reconstruct", "m")
        assert family.adapter and family.attention is not None
    with pytest.raises(InputError, match="needs a registered model family.*generate, scan and cliques still work"):
        require(unregistered("StableDiffusionPAGPipeline"), "check --reconstruct", "m")
