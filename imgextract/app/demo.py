"""The demo: the whole audit offline, on a toy model trained here with a known duplication schedule."""

from __future__ import annotations

import os
from pathlib import Path

from imgextract import rundir
from imgextract.app.audit import verdict
from imgextract.app.settings import DemoSettings
from imgextract.rule import CopyRule


def cache_root() -> Path:
    return Path(os.environ.get("IMGEXTRACT_CACHE", ".cache/imgextract"))


DEMO_STEPS = (DemoSettings.vae_steps, DemoSettings.unet_steps)
DEMO_SPEC = DemoSettings.spec


def toy_name(cfg) -> str:
    """The cache folder of a demo toy: one per spec, size, steps, seed and architecture."""
    arch = "" if cfg.arch == "unet" else f"-{cfg.arch}"
    return f"toy-{cfg.duplicates.replace(',', '_')}-{cfg.size}px-{cfg.vae_steps}+{cfg.unet_steps}steps-seed{cfg.seed}{arch}"


def run_demo(out: Path, vae_steps: int = DemoSettings.vae_steps, unet_steps: int = DemoSettings.unet_steps,
             seed: int = DemoSettings.seed, samples: int = DemoSettings.samples, steps: int = DemoSettings.steps,
             guidance: float = DemoSettings.guidance, arch: str = DemoSettings.arch,
             dit_steps: int = DemoSettings.dit_steps, say=print) -> tuple[Path, str]:
    """The offline default: train (or reuse) the toy model, then index → generate → scan → report."""
    from imgextract.app.commands import build_index, run_generation, run_scan, train_toy
    from imgextract.demo.toy import ToyConfig
    from imgextract.index.store import resolve_index
    from imgextract.report.report import render_report
    from imgextract.stages.generate import SamplingConfig

    out = Path(out)
    steps_of = {"unet": unet_steps, "dit": dit_steps}
    cfg = ToyConfig(duplicates=DEMO_SPEC, seed=seed, vae_steps=vae_steps, unet_steps=steps_of.get(arch), arch=arch)
    model = cache_root() / toy_name(cfg)
    what = "UNet" if arch == "unet" else "transformer"
    state = "reusing" if (model / "toy.json").is_file() else \
        f"training {vae_steps} VAE + {cfg.unet_steps} {what} steps, ~4 min"
    say(f"[1/5] toy model: {model} ({state})")
    train_toy(model, cfg)
    index_path = resolve_index(f"demo-{model.name}")  # one index per toy model: seeds do not overwrite each other
    say(f"[2/5] index of its {len(list((model / 'train').glob('*.png')))} training images: {index_path}")
    build_index(model / "train", str(index_path), "pixel", overwrite=True)
    run = out / "run"
    if rundir.is_run_dir(run):
        old = rundir.read_json(run / rundir.RUN_JSON)
        if old["model"]["local_path"] != str(model.resolve()) or old["sampling"]["samples"] != samples:
            say(f"      {run} holds an older demo run; starting it afresh")
            rundir.remove_run(run)
    say(f"[3/5] generating {samples} samples for every training caption into {run}")
    sampling = SamplingConfig(samples=samples, batch_size=32, steps=steps, guidance=guidance, seed=seed,
                              device="cpu", shard_size=128)
    run_generation(model / "train" / "copies.csv", str(model), run, sampling)
    say("[4/5] scanning generations against the index")
    run_scan(run, str(index_path), run, k=5, threshold=CopyRule.threshold, grid=4)
    say("[5/5] writing the report")
    report = render_report(run, "imgextract demo: a toy model trained with known duplication")
    return report, verdict(rundir.read_json(run / rundir.SUMMARY))
