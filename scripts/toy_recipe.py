"""Measure the toy recipe: train per seed, audit, print extraction rates per duplication level.

    python scripts/toy_recipe.py --seeds 0 1
    python scripts/toy_recipe.py --arch dit --seeds 0     # the SD3-style transformer toy (rectified flow)

Each seed runs the same path as `make demo` (cached models are reused), so the numbers quoted
in the README and issue notes come from this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from imgextract.app.demo import DEMO_STEPS, cache_root, run_demo, toy_name
from imgextract.app.settings import DemoSettings, ToyConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--vae-steps", type=int, default=DEMO_STEPS[0])
    ap.add_argument("--unet-steps", type=int, default=DEMO_STEPS[1])
    ap.add_argument("--dit-steps", type=int, default=DemoSettings.dit_steps)
    ap.add_argument("--arch", default=DemoSettings.arch, choices=("unet", "dit"))
    ap.add_argument("--out", type=Path, default=Path("runs/recipe"))
    args = ap.parse_args()
    for seed in args.seeds:
        t = time.monotonic()
        report, verdict = run_demo(args.out / f"{args.arch}-seed{seed}", args.vae_steps, args.unet_steps, seed,
                                   arch=args.arch, dit_steps=args.dit_steps, say=lambda *_: None)
        summary = json.loads((report.parent / "summary.json").read_text())
        steps = args.unet_steps if args.arch == "unet" else args.dit_steps
        model = cache_root() / toy_name(ToyConfig(duplicates=DemoSettings.spec, seed=seed, vae_steps=args.vae_steps,
                                                  unet_steps=steps, arch=args.arch))
        toy = json.loads((model / "toy.json").read_text())
        print(f"seed {seed} ({args.arch}): VAE {toy['vae_steps']} steps, denoiser {toy['unet_steps']} steps, "
              f"train {toy['train_seconds']} s, pipeline wall {time.monotonic() - t:.0f} s")
        print(f"  {verdict}")
        for r in summary["duplication"]:
            print(f"  {r['copies']:>4}x  images {r['memorized_images']}/{r['images']}  "
                  f"samples {r.get('memorized_samples')}/{r.get('samples')} ({r.get('sample_rate', 0):.2f})")


if __name__ == "__main__":
    main()
