import pytest
import torch
from diffusers import DDIMScheduler

from imgextract.models.denoisers import to_epsilon
from imgextract.stages.triage import TriageParams, edge_consistency, top_captions, triage, wen_score


@pytest.mark.parametrize("kind", ["sample", "v_prediction", "epsilon"])
def test_model_outputs_convert_to_the_true_noise(kind):
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor(600)
    x_t = sched.add_noise(x0, eps, t)
    a = sched.alphas_cumprod[t]
    output = {"sample": x0, "epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[kind]
    assert torch.allclose(to_epsilon(kind, output, x_t, t, sched), eps, atol=1e-4)


def test_wen_score_is_the_conditional_minus_unconditional_norm(tiny_model):
    """One step, by hand: the same UNet calls, the same noise, the same norm."""
    from imgextract.stages.generate import sample_seed
    pipe = tiny_model.pipe
    params = TriageParams(steps=1, samples=2, schedule_steps=10, guidance=3.0, seed=4)
    score, evals = wen_score(tiny_model, "a red rocket", "7", params, (32, 32))
    assert evals == 4
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(["a red rocket"] * 2, "cpu", 1, True, negative_prompt=[""] * 2)
        noise = torch.stack([torch.randn((4, 16, 16), generator=torch.Generator().manual_seed(sample_seed(4, "7", i)))
                             for i in range(2)])
        pipe.scheduler.set_timesteps(10)
        t = pipe.scheduler.timesteps[0]
        x = noise * pipe.scheduler.init_noise_sigma
        a = pipe.scheduler.alphas_cumprod[t]
        # the tiny model predicts x0; its noise prediction is (x - sqrt(a) x0) / sqrt(1 - a)
        e_c = (x - a.sqrt() * pipe.unet(x, t, encoder_hidden_states=cond).sample) / (1 - a).sqrt()
        e_u = (x - a.sqrt() * pipe.unet(x, t, encoder_hidden_states=uncond).sample) / (1 - a).sqrt()
        expect = (e_c - e_u).flatten(1).norm(dim=1).mean().item()
    assert score == pytest.approx(expect, rel=1e-4)
    assert score > 0


def test_edge_consistency_separates_repeats_from_variety(photos):
    same = [photos["astronaut"].resize((64, 64))] * 4
    varied = [photos[n].resize((64, 64)) for n in ["astronaut", "coffee", "rocket", "camera"]]
    assert edge_consistency(same) == pytest.approx(1.0)
    assert edge_consistency(varied) < 0.6


def test_triage_table_and_top_selection(tmp_path, tiny_model):
    import pandas as pd
    from imgextract.sources.tables import read_captions
    from imgextract.stages.triage import write_triage
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\na cup of coffee\na ginger cat\n")
    table = read_captions(caps)
    params = TriageParams(steps=2, samples=2, schedule_steps=10, guidance=3.0)
    res = triage(tiny_model, table.to_pandas(), params)
    key = res["ranked_by"].iat[0]
    assert key == "edge_score"  # the evaluated default, computed here
    assert list(res[key]) == sorted(res[key], reverse=True)
    assert (res["unet_evals"] == 2 * 2 * 2 + 2 * 2).all()
    assert res["edge_score"].between(0, 1).all()
    write_triage(res, tmp_path / "t.parquet", params)
    top = top_captions(table, tmp_path / "t.parquet", 2)  # by the score the file was ranked by
    assert top["caption_id"].to_pylist() == res["caption_id"].head(2).tolist()
    assert pd.read_parquet(tmp_path / "t.parquet")["param_steps"].iloc[0] == 2


def test_attention_score_is_the_cross_attention_computed_by_hand(tiny_model):
    """The recorder's per-token attention equals softmax(Q·Kᵀ/√d) computed by hand from each cross-attention
    module's own inputs and weights, in the same UNet calls Wen's score makes; then entropy by hand."""
    import numpy as np
    from imgextract.models.denoisers import denoiser_of
    from imgextract.stages.triage import attention_features, mean_attention
    pipe = tiny_model.pipe
    params = TriageParams(steps=1, samples=2, schedule_steps=10, guidance=3.0, seed=1)
    by_hand = []

    def hook(module, args, kwargs, output):
        h, ctx = args[0] if args else kwargs["hidden_states"], kwargs.get("encoder_hidden_states")
        if ctx is None:
            return
        if h.ndim == 4:
            h = h.flatten(2).transpose(1, 2)
        b, n, _ = h.shape
        heads = module.heads
        q = module.to_q(h).view(b, n, heads, -1).transpose(1, 2)
        k = module.to_k(ctx).view(b, ctx.shape[1], heads, -1).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) * module.scale, dim=-1)   # (b, heads, pixels, tokens)
        by_hand.append(p.mean(dim=2).mean(dim=1)[: b // 2].detach())       # the conditional half

    handles = [m.register_forward_hook(hook, with_kwargs=True) for name, m in pipe.unet.named_modules()
               if name.endswith("attn2")]
    try:
        recorded = []
        score, evals = wen_score(tiny_model, "a red rocket", "3", params, (32, 32), recorded)
    finally:
        for h in handles:
            h.remove()
    assert evals == 4 and len(recorded) == len(by_hand) > 0
    for r, h in zip(recorded, by_hand):
        assert torch.allclose(r, h, atol=1e-5)
    dist = mean_attention(recorded)
    end = len(pipe.tokenizer("a red rocket").input_ids) - 1        # the end-of-text token's position
    start, prompt = denoiser_of(tiny_model).text_positions("a red rocket", len(dist))
    assert start.nonzero()[0].tolist() == [0] and prompt.nonzero()[0].tolist() == list(range(1, end))
    neg_entropy, end_share = attention_features(dist, start, prompt)
    p = dist[1:] / dist[1:].sum()
    assert neg_entropy == pytest.approx(float((p * np.log(p)).sum()), rel=1e-6)
    assert end_share == pytest.approx(float(p[end - 1:].sum()), rel=1e-6)
    assert 0 < end_share < 1


def test_guide_score_is_the_norm_of_the_seed_averaged_first_step_guidance(tiny_model):
    """Asthana & Belagiannis's signal, by hand: on pure noise, ε(x_T, c) − ε(x_T, ∅) per seed; strong and
    aligned guidance survives the average over seeds, guidance that points elsewhere for every seed cancels."""
    import numpy as np
    from imgextract.stages.generate import sample_seed
    from imgextract.stages.triage import guidance_features
    pipe = tiny_model.pipe
    params = TriageParams(steps=1, samples=3, schedule_steps=10, guidance=3.0, seed=4)
    res = triage(tiny_model, __import__("pandas").DataFrame({"caption_id": ["7"], "caption": ["a red rocket"]}),
                 params, ("guide",))
    assert res["unet_evals"].iat[0] == 6 and res["guide_unet_evals"].iat[0] == 6 and res["wen_score"].isna().all()
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(["a red rocket"] * 3, "cpu", 1, True, negative_prompt=[""] * 3)
        x = torch.stack([torch.randn((4, 16, 16), generator=torch.Generator().manual_seed(sample_seed(4, "7", i)))
                         for i in range(3)]) * pipe.scheduler.init_noise_sigma
        pipe.scheduler.set_timesteps(10)
        t = pipe.scheduler.timesteps[0]
        a = pipe.scheduler.alphas_cumprod[t]
        eps = [(x - a.sqrt() * pipe.unet(x, t, encoder_hidden_states=c).sample) / (1 - a).sqrt() for c in (cond, uncond)]
        g = (eps[0] - eps[1]).flatten(1).double().numpy()
    assert res["guide_score"].iat[0] == pytest.approx(np.linalg.norm(g.mean(axis=0)), rel=1e-4)
    assert res["guide_agreement"].iat[0] == pytest.approx(
        np.linalg.norm(g.mean(axis=0)) / np.linalg.norm(g, axis=1).mean(), rel=1e-4)
    aligned = guidance_features([np.ones(8), 2 * np.ones(8)])
    opposed = guidance_features([np.ones(8), -np.ones(8)])
    assert aligned[1] == pytest.approx(1.0) and opposed == (0.0, 0.0)
