"""scripts/gpu_check.py runs every path it measures on a GPU, at toy sizes, and checks its answers."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_small_mode_runs_each_check_and_its_answers_agree(tmp_path):
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--small", "--json", str(out)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["small"] is True
    generation = [c for c in got["checks"] if c["what"] == "generation"]
    checks = {c["what"]: c for c in got["checks"]}
    assert list(checks) == ["generation", "embedding", "search", "cliques"]
    assert [g["family"] for g in generation] == ["sd1", "sdxl", "sd3", "flux-dev"]   # UNets and transformers
    assert [g["denoiser"] for g in generation] == ["UNet2DConditionModel"] * 2 + ["SD3Transformer2DModel",
                                                                                  "FluxTransformer2DModel"]
    for gen in generation:
        assert gen["images"] == 4 and gen["images_per_s"] > 0 and 0 < gen["unet_share"] <= 1, gen
        assert gen["peak_memory_gib"] > 0 and gen["steps"] == 2 and gen["dtype"] == "float32"
    assert checks["embedding"]["images"] == 16 and checks["embedding"]["dimension"] == 32
    assert checks["search"]["top1_agrees_with_numpy"] == 1.0
    assert checks["cliques"]["where"].startswith("torch") and checks["cliques"]["max_difference_vs_numpy"] < 1e-4
    assert "UNet2DConditionModel" in p.stdout and "FluxTransformer2DModel" in p.stdout and "of wall time" in p.stdout


def test_the_full_architectures_are_the_published_ones(monkeypatch):
    """The GPU check's full builds (scripts/architectures.py), made on the meta device (no memory, no GPU): each
    denoiser has its published parameter count (SD 1.5's UNet 860M, SDXL's 2.6B, SD 3 medium's MMDiT 2B,
    FLUX.1's 12B) and takes its pipeline's inputs at the native size, so a wrong config value fails here rather
    than on a lent GPU."""
    import torch
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from architectures import FULL, build_full
    published = {"sd1": 0.8595e9, "sdxl": 2.567e9, "sd3": 2.028e9, "flux-dev": 11.90e9}
    for family, (_, side, precision, _) in FULL.items():
        pipe = build_full(family, "meta")
        d = pipe.transformer if family in ("sd3", "flux-dev") else pipe.unet
        n = sum(p.numel() for p in d.parameters())
        assert abs(n / published[family] - 1) < 0.01, (family, n)
        dtype = getattr(torch, precision)
        assert next(d.parameters()).dtype == dtype

        def m(*shape):
            return torch.empty(*shape, device="meta", dtype=dtype)
        lat = side // 8
        if family == "sd1":
            out = d(m(1, 4, lat, lat), m(1), encoder_hidden_states=m(1, 77, 768)).sample
        elif family == "sdxl":
            out = d(m(1, 4, lat, lat), m(1), encoder_hidden_states=m(1, 77, 2048),
                    added_cond_kwargs={"text_embeds": m(1, 1280), "time_ids": m(1, 6)}).sample
        elif family == "sd3":
            out = d(hidden_states=m(1, 16, lat, lat), timestep=m(1), encoder_hidden_states=m(1, 77 + 256, 4096),
                    pooled_projections=m(1, 2048)).sample
        else:
            tokens = (lat // 2) ** 2
            out = d(hidden_states=m(1, tokens, 64), timestep=m(1), encoder_hidden_states=m(1, 512, 4096),
                    pooled_projections=m(1, 768), txt_ids=m(512, 3), img_ids=m(tokens, 3), guidance=m(1)).sample
        expected = {"sd1": (1, 4, 64, 64), "sdxl": (1, 4, 128, 128), "sd3": (1, 16, 128, 128), "flux-dev": (1, 4096, 64)}
        assert tuple(out.shape) == expected[family], (family, out.shape)
