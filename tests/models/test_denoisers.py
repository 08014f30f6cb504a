"""Each family's denoiser adapter samples exactly as the family's own diffusers pipeline does (the same
latents from the same seeds), and Wen's score is the prediction difference computed by hand from the denoiser
itself, in each parameterisation (epsilon, v, SDXL's added conditioning, flow velocity, Flux's embedded
guidance, PixArt's learned variance split off)."""

from __future__ import annotations

import pytest
import torch

from imgextract.demo.families import TINY, save_tiny_family
from imgextract.models.denoisers import denoiser_of
from imgextract.models.pipelines import load_pipeline, native_size


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("denoiser-families")
    return {f: load_pipeline(str(save_tiny_family(f, root / f)), "cpu") for f in TINY}


@pytest.mark.parametrize("name", TINY)
def test_the_adapter_samples_the_pipelines_own_latents(loaded, name):
    model = loaded[name]
    pipe, family = model.pipe, model.family
    size = native_size(pipe, family)
    prompts, seeds, guidance = ["a red rocket", "a cup of coffee"], [11, 12], max(family.guidance, 2.0)
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.no_grad():
        want = pipe(prompt=prompts, num_inference_steps=3, guidance_scale=guidance, height=size[0], width=size[1],
                    generator=gens, output_type="latent", **family.call).images
    got = denoiser_of(model).sample_latents(prompts, seeds, 3, guidance, size)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), float((got - want).abs().max())


def _noise(seeds, shape):
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])


def _first_step_by_hand(name, pipe, prompt, seeds, size, schedule, guidance):
    """(prediction with the prompt, prediction with the empty prompt) at the schedule's first step, from the
    pipeline's own encoders and helpers and the denoiser called directly, in its own parameterisation turned
    into the score's space: epsilon for noise-predicting models, the velocity for flow matching."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    n, prompts = len(seeds), [prompt] * len(seeds)
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    h, w = size[0] // pipe.vae_scale_factor, size[1] // pipe.vae_scale_factor
    if name == "sd2":                  # v-prediction: epsilon = sqrt(a) v + sqrt(1 - a) x
        cond, uncond = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=[""] * n)
        sched.set_timesteps(schedule)
        t = sched.timesteps[0]
        x = _noise(seeds, (4, h, w)) * sched.init_noise_sigma
        a = sched.alphas_cumprod[t]
        v = [pipe.unet(x, t, encoder_hidden_states=c).sample for c in (cond, uncond)]
        return [a.sqrt() * p + (1 - a).sqrt() * x for p in v]
    if name == "sdxl":                 # epsilon, with the pooled text and size/crop embeddings; empty prompt = zeros
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=prompts, device="cpu", num_images_per_prompt=1,
                                                do_classifier_free_guidance=True)
        sched.set_timesteps(schedule)
        t = sched.timesteps[0]
        x = sched.scale_model_input(_noise(seeds, (4, h, w)) * sched.init_noise_sigma, t)
        ids = torch.tensor([[size[0], size[1], 0, 0, size[0], size[1]]], dtype=torch.float32).expand(n, -1)
        return [pipe.unet(x, t, encoder_hidden_states=e, added_cond_kwargs={"text_embeds": p, "time_ids": ids}).sample
                for e, p in ((pe, ppe), (npe, nppe))]
    if name == "sd3":                  # rectified flow: the velocity itself, on pure noise at sigma = 1
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device="cpu",
                                                do_classifier_free_guidance=True)
        sched.set_timesteps(schedule)
        t = sched.timesteps[0].expand(n)
        x = _noise(seeds, (16, h, w))
        return [pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=e, pooled_projections=p).sample
                for e, p in ((pe, ppe), (npe, nppe))]
    if name == "flux-dev":             # guidance-distilled: the scale embedded; the empty prompt under it
        pe, ppe, txt = pipe.encode_prompt(prompt=prompts, prompt_2=None, device="cpu")
        npe, nppe, _ = pipe.encode_prompt(prompt=[""] * n, prompt_2=None, device="cpu")
        x = pipe._pack_latents(_noise(seeds, (4, h, w)), n, 4, h, w)
        img = pipe._prepare_latent_image_ids(n, h // 2, w // 2, "cpu", torch.float32)
        c = sched.config
        mu = calculate_shift(x.shape[1], c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        sched.set_timesteps(sigmas=[1.0 - i / schedule for i in range(schedule)], mu=mu)
        t = sched.timesteps[0].expand(n) / 1000
        g = torch.full((n,), float(guidance))
        return [pipe.transformer(hidden_states=x, timestep=t, guidance=g, pooled_projections=p,
                                 encoder_hidden_states=e, txt_ids=txt, img_ids=img).sample
                for e, p in ((pe, ppe), (npe, nppe))]
    if name == "pixart-sigma":         # epsilon with the learned variance as the output's second half, dropped
        pe, pm, npe, npm = pipe.encode_prompt(prompts, do_classifier_free_guidance=True, negative_prompt="",
                                              device="cpu", clean_caption=False, max_sequence_length=300)
        sched.set_timesteps(schedule)
        t = sched.timesteps[0].expand(n)
        x = _noise(seeds, (4, h, w)) * sched.init_noise_sigma
        return [pipe.transformer(x, encoder_hidden_states=e, encoder_attention_mask=m, timestep=t,
                                 added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample.chunk(2, 1)[0]
                for e, m in ((pe, pm), (npe, npm))]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["sd2", "sdxl", "sd3", "flux-dev", "pixart-sigma"])
def test_wen_score_is_the_prediction_difference_computed_by_hand(loaded, name):
    from imgextract.stages.generate import sample_seed
    from imgextract.stages.triage import TriageParams, wen_score
    model = loaded[name]
    size = native_size(model.pipe, model.family)
    params = TriageParams(steps=1, samples=2, schedule_steps=10, guidance=3.0, seed=4)
    score, evals = wen_score(model, "a red rocket", "7", params, size)
    assert evals == 4
    seeds = [sample_seed(4, "7", i) for i in range(2)]
    with torch.no_grad():
        c, u = _first_step_by_hand(name, model.pipe, "a red rocket", seeds, size, 10, 3.0)
    expect = (c - u).flatten(1).norm(dim=1).mean().item()
    assert expect > 0 and score == pytest.approx(expect, rel=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_triage_scores_every_family_in_its_own_space(loaded, name):
    import numpy as np
    import pandas as pd

    from imgextract.stages.triage import TriageParams, triage
    model = loaded[name]
    captions = pd.DataFrame({"caption_id": ["a", "b"], "caption": ["a red rocket", "a cup of coffee"]})
    table = triage(model, captions, TriageParams(steps=2, samples=2, schedule_steps=4, guidance=3.0),
                   ("wen", "guide", "attn", "mid", "edge"))
    for col in ("wen_score", "guide_score", "guide_agreement", "edge_score", "attn_end", "mid_score"):
        assert np.isfinite(table[col].astype(float)).all() and (table[col] > 0).all(), (col, table[col])
    assert (table["guide_agreement"] <= 1 + 1e-6).all() and (table["attn_end"] < 1).all()
    assert np.isfinite(table["attn_score"].astype(float)).all() and (table["attn_score"] <= 0).all()
    assert set(table["score_space"]) == {"velocity" if model.family.objectives == ("flow",) else "epsilon"}
    assert all(len(t) == 2 for t in table["score_timesteps"])


@pytest.mark.parametrize("name", TINY)
def test_the_adapter_decodes_the_pipelines_own_images(loaded, name):
    import numpy as np
    model = loaded[name]
    size = native_size(model.pipe, model.family)
    gens = [torch.Generator("cpu").manual_seed(5)]
    want = model.pipe(prompt=["a red rocket"], num_inference_steps=2, guidance_scale=3.0, height=size[0],
                      width=size[1], generator=gens, output_type="pil", **model.family.call).images[0]
    got = denoiser_of(model).images(["a red rocket"], [5], 2, 3.0, size)[0]
    assert np.abs(np.asarray(got, int) - np.asarray(want, int)).max() <= 1


@pytest.mark.parametrize("name", ["sd3", "pixart-sigma"])
def test_the_text_attention_is_softmax_of_the_layers_own_queries_and_keys(loaded, name):
    """Per text-carrying layer, the share of attention the image positions give each text position, computed by
    hand from the layer's own projections: SD3's joint attention (image tokens first, text last), PixArt's
    cross-attention with its T5 padding mask."""
    from imgextract.stages.triage import TriageParams, wen_score
    model = loaded[name]
    module, n = model.pipe.transformer, 2
    by_hand = []

    def heads(attn, x):
        return x.view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

    def hook(attn, args, kwargs, output):
        h = args[0] if args else kwargs["hidden_states"]
        e = kwargs.get("encoder_hidden_states")
        if e is None:
            return
        q, k = heads(attn, attn.to_q(h)), heads(attn, attn.to_k(h if name == "sd3" else e))
        if name == "sd3":
            q, k = (attn.norm_q(q) if attn.norm_q else q), (attn.norm_k(k) if attn.norm_k else k)
            eq, ek = heads(attn, attn.add_q_proj(e)), heads(attn, attn.add_k_proj(e))
            eq = attn.norm_added_q(eq) if attn.norm_added_q else eq
            ek = attn.norm_added_k(ek) if attn.norm_added_k else ek
            p = torch.softmax(torch.cat([q, eq], 2) @ torch.cat([k, ek], 2).transpose(-1, -2) * attn.scale, -1)
            share = p[:, :, :h.shape[1], h.shape[1]:]
        else:
            bias = kwargs["attention_mask"][:, None]            # (batch, 1, 1, tokens): 0 or -10000
            share = torch.softmax(q @ k.transpose(-1, -2) * attn.scale + bias, -1)
        by_hand.append(share.mean(dim=2).mean(dim=1)[:n])

    want = "attn" if name == "sd3" else "attn2"
    hooks = [m.register_forward_hook(hook, with_kwargs=True) for key, m in module.named_modules()
             if key.rsplit(".", 1)[-1] == want]
    try:
        recorded = []
        wen_score(model, "a red rocket", "3", TriageParams(steps=1, samples=n, schedule_steps=10, guidance=3.0),
                  native_size(model.pipe, model.family), recorded)
    finally:
        for h in hooks:
            h.remove()
    assert len(recorded) == len(by_hand) > 0
    for r, h in zip(recorded, by_hand):
        assert torch.allclose(r, h.float(), atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_the_reconstruction_search_lowers_the_familys_own_training_loss(loaded, name, photos):
    """The search's loss before and after, recomputed here from the family's objective (DDPM noising with an
    epsilon/v target, or rectified flow: x_t = (1 - s) x0 + s n, target n - x0) on the search's own held-out
    draws, with the empty prompt and with the fitted conditioning; the fit lowered it."""
    from diffusers import DDPMScheduler

    from imgextract.distance import to_uint8
    from imgextract.progress import drain
    from imgextract.stages.generate import sample_seed
    from imgextract.stages.reconstruct import EVAL_DRAWS, Budget, fit_conditioning
    model = loaded[name]
    size, den = native_size(model.pipe, model.family), denoiser_of(model)
    flux = name.startswith("flux")      # 128 px: a shorter search
    image = photos["astronaut"]
    # lr 0.5: on these random transformers the text moves the loss little; the drop is then >= 6e-5 of it
    # (SD3, Flux; 1e-2 and more elsewhere), hundreds of times float32's rounding of these sums
    budget = Budget(steps=3 if flux else 12, batch=2, lr=0.5)
    cond, before, after = drain(fit_conditioning(model, image, budget, size, "w0"))
    pixels = torch.from_numpy(to_uint8(image, size).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    z0 = den.encode_image(pixels)
    held = torch.Generator("cpu").manual_seed(sample_seed(0, "measure:w0", 0))
    t = den.loss_times(held, EVAL_DRAWS)
    noise = torch.randn((EVAL_DRAWS, *z0.shape[1:]), generator=held)
    x0 = z0.expand(EVAL_DRAWS, *z0.shape[1:])
    if den.objective == "flow":
        s = t.view(-1, *[1] * (x0.dim() - 1))
        x_t, target, given = (1 - s) * x0 + s * noise, noise - x0, t * 1000
    else:
        ddpm = DDPMScheduler.from_config(model.pipe.scheduler.config)
        x_t, given = ddpm.add_noise(x0, noise, t), t
        target = noise if den.objective == "epsilon" else ddpm.get_velocity(x0, noise, t)

    def loss(c):
        with torch.no_grad():
            pred = den.predict(x_t, given, c.expand(EVAL_DRAWS), size, model.family.guidance)
        return float(((pred - target) ** 2).mean())
    assert loss(den.empty()) == pytest.approx(before, rel=1e-5)
    assert loss(cond) == pytest.approx(after, rel=1e-5)
    assert after < before
    from imgextract.stages.reconstruct import draw   # the fitted conditioning draws through the family's pipeline
    assert [im.size for im in draw(model, cond, [1, 2], 2, 3.0, size)] == [size[::-1]] * 2


@pytest.mark.parametrize("name", ["sd2", "sd3"])
def test_the_middle_of_the_flow_score_by_hand(loaded, name):
    """mid_score, by hand: the first step's guided prediction gives clean latents, noised again with the seed's
    own noise to the schedule's middle timestep (DDPM: √ā x0 + √(1 − ā) n; rectified flow: (1 − s) x0 + s n),
    where the prompt's and the empty prompt's predictions are compared in the family's score space."""
    import pandas as pd

    from imgextract.stages.generate import sample_seed
    from imgextract.stages.triage import TriageParams, triage
    model = loaded[name]
    pipe, size, g = model.pipe, native_size(model.pipe, model.family), 3.0
    table = triage(model, pd.DataFrame({"caption_id": ["7"], "caption": ["a red rocket"]}),
                   TriageParams(steps=1, samples=2, schedule_steps=10, guidance=g, seed=4), ("mid",))
    seeds = [sample_seed(4, "7", i) for i in range(2)]
    h, w = size[0] // pipe.vae_scale_factor, size[1] // pipe.vae_scale_factor
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(10)
    t0, tm = sched.timesteps[0], sched.timesteps[5]
    with torch.no_grad():
        if name == "sd2":
            cond, uncond = pipe.encode_prompt(["a red rocket"] * 2, "cpu", 1, True, negative_prompt=[""] * 2)
            n = _noise(seeds, (4, h, w))

            def eps(x, t):    # v-prediction as epsilon, for the prompt and the empty prompt
                a = sched.alphas_cumprod[t]
                return [a.sqrt() * pipe.unet(x, t, encoder_hidden_states=c).sample + (1 - a).sqrt() * x
                        for c in (cond, uncond)]
            ec, eu = eps(n, t0)
            a0, am = sched.alphas_cumprod[t0], sched.alphas_cumprod[tm]
            x0 = (n - (1 - a0).sqrt() * (eu + g * (ec - eu))) / a0.sqrt()
            c, u = eps(am.sqrt() * x0 + (1 - am).sqrt() * n, tm)
        else:
            pe, npe, ppe, nppe = pipe.encode_prompt(prompt=["a red rocket"] * 2, prompt_2=None, prompt_3=None,
                                                    device="cpu", do_classifier_free_guidance=True)
            n = _noise(seeds, (16, h, w))

            def vel(x, t):
                return [pipe.transformer(hidden_states=x, timestep=t.expand(2), encoder_hidden_states=e,
                                         pooled_projections=p).sample for e, p in ((pe, ppe), (npe, nppe))]
            vc, vu = vel(n, t0)
            s0, sm = float(t0) / 1000, float(tm) / 1000
            x0 = n - s0 * (vu + g * (vc - vu))
            c, u = vel((1 - sm) * x0 + sm * n, tm)
    expect = (c - u).flatten(1).norm(dim=1).mean().item()
    assert table["mid_timestep"].iat[0] == pytest.approx(float(tm), abs=1e-3)
    assert expect > 0 and table["mid_score"].iat[0] == pytest.approx(expect, rel=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_membership_features_are_the_familys_own_loss_by_hand(loaded, name, photos):
    """loss@F is the family's training loss at the fixed point F of its schedule with the recorded seeded
    noises (DDPM noising with its epsilon/v target, or rectified flow's x_t = (1 - s) x0 + s n, target n - x0),
    recomputed here from the denoiser itself; pia is that loss with the noise the model reads in the clean latents
    (its prediction at t = 0 as epsilon, or v + x0 for flow), at unit variance."""
    import numpy as np
    from diffusers import DDPMScheduler

    from imgextract.distance import fit
    from imgextract.models.denoisers import to_epsilon
    from imgextract.progress import drain
    from imgextract.stages.membership import feature_names, features, noise_seed
    from imgextract.stages.settings import MembershipSettings
    model = loaded[name]
    size, den, g = native_size(model.pipe, model.family), denoiser_of(model), model.family.guidance
    settings = MembershipSettings(timesteps=(0.3,), noises=2, pia_timestep=0.2)
    image = photos["coffee"]
    row = drain(features(model, [image], [None], settings, size))[0]
    assert feature_names(settings) == ["loss@0.3", "ratio", "pia"] and np.isfinite(row).all()
    pixels = torch.from_numpy(np.asarray(fit(image, size)).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    z0 = den.encode_image(pixels)
    noise = torch.stack([torch.randn(z0.shape[1:], generator=torch.Generator("cpu").manual_seed(noise_seed(0, k)))
                         for k in range(2)])
    flow = den.objective == "flow"
    ddpm = None if flow else DDPMScheduler.from_config(model.pipe.scheduler.config)
    last = None if flow else model.pipe.scheduler.config.num_train_timesteps - 1

    def loss(x0, n, at):
        if flow:
            s = torch.full((len(n),), at)
            x_t, target, given = (1 - at) * x0 + at * n, n - x0, s * model.pipe.scheduler.config.num_train_timesteps
        else:
            t = torch.full((len(n),), round(at * last))
            x_t, given = ddpm.add_noise(x0, n, t), t
            target = {"epsilon": n, "sample": x0}.get(den.objective)
            target = ddpm.get_velocity(x0, n, t) if target is None else target
        with torch.no_grad():
            pred = den.predict(x_t, given, den.unconditional(len(n)), size, g)
        return ((pred - target) ** 2).flatten(1).mean(1)

    assert row[0] == pytest.approx(float(torch.log(loss(z0.expand(2, *z0.shape[1:]), noise, 0.3).mean())), rel=1e-4)
    with torch.no_grad():
        zero = torch.zeros(1, dtype=torch.long)
        pred0 = den.predict(z0, zero, den.unconditional(1), size, g)
    read = pred0 + z0 if flow else to_epsilon(den.objective, pred0, z0, 0, ddpm)
    read = read / read.flatten(1).std(1)
    assert row[2] == pytest.approx(float(torch.log(loss(z0, read, 0.2))), rel=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_the_size_multiple_read_from_the_folder_is_the_loaded_pipelines(loaded, name):
    """What --size must be a multiple of, read from the folder's configs before loading (so a wrong size is refused
    without the model loading), equals what the loaded pipeline says."""
    from imgextract.models.families import family_of_folder, folder_size_multiple, size_multiple
    model = loaded[name]
    assert folder_size_multiple(family_of_folder(model.local_path), model.local_path) == \
        size_multiple(model.family, model.pipe)
