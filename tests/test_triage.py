import pytest
import torch
from diffusers import DDIMScheduler

from imgextract.triage import TriageParams, _to_epsilon, edge_consistency, top_captions, triage, wen_score


@pytest.mark.parametrize("kind", ["sample", "v_prediction", "epsilon"])
def test_model_outputs_convert_to_the_true_noise(kind):
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor(600)
    x_t = sched.add_noise(x0, eps, t)
    a = sched.alphas_cumprod[t]
    output = {"sample": x0, "epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[kind]
    assert torch.allclose(_to_epsilon(output, x_t, t, sched), eps, atol=1e-4)


def test_wen_score_is_the_conditional_minus_unconditional_norm(tiny_model):
    """One step, by hand: the same UNet calls, the same noise, the same norm."""
    from imgextract.generate import sample_seed
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
    from imgextract.sources import read_captions
    from imgextract.triage import write_triage
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\na cup of coffee\na ginger cat\n")
    table = read_captions(caps)
    params = TriageParams(steps=2, samples=2, schedule_steps=10, guidance=3.0)
    res = triage(tiny_model, table.to_pandas(), params)
    assert list(res["wen_score"]) == sorted(res["wen_score"], reverse=True)
    assert (res["unet_evals"] == 2 * 2 * 2 + 2 * 2).all()
    assert res["edge_score"].between(0, 1).all()
    write_triage(res, tmp_path / "t.parquet", params)
    top = top_captions(table, tmp_path / "t.parquet", 2)
    assert top["caption_id"].to_pylist() == res["caption_id"].head(2).tolist()
    assert pd.read_parquet(tmp_path / "t.parquet")["param_steps"].iloc[0] == 2
