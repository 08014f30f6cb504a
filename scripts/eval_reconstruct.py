"""How often the reconstruction search draws a copy, on the demo's toy model: memorized works,
training works seen once, and calibration images the model never saw (the null).

    python scripts/eval_reconstruct.py [--per-group 12] [--steps 150 600] [--json out.json]

The demo's toy model (``make demo``'s schedule and step counts) is trained here or reused from the
cache. Groups, each searched with the same budget (``stages/reconstruct.py``'s defaults but for
``--steps``) and judged with the copy verdict against its own image:

  memorized   the images with 100 and 10 copies in training (5)
  seen once   single-copy training images (the first ``--per-group``)
  never seen  the toy pool's held-out images, then LFW faces (``--per-group`` in all)

Each rate is printed with its 95% Wilson interval. A search whose never-seen rate is not near 0
reconstructs images the model did not learn: its hits prove little, and check says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-group", type=int, default=12)
    ap.add_argument("--steps", type=int, nargs="+", default=[150])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from imgextract.app.commands import train_toy
    from imgextract.app.demo import DEMO_SPEC, DEMO_STEPS, cache_root
    from imgextract.demo.photos import faces
    from imgextract.demo.toy import ToyConfig, training_set
    from imgextract.models.pipelines import load_pipeline
    from imgextract.progress import drain
    from imgextract.stages.reconstruct import Budget, null_rate

    cfg = ToyConfig(duplicates=DEMO_SPEC, seed=0, vae_steps=DEMO_STEPS[0], unet_steps=DEMO_STEPS[1])
    model = cache_root() / f"toy-{cfg.duplicates.replace(',', '_')}-{cfg.size}px-{DEMO_STEPS[0]}+{DEMO_STEPS[1]}steps-seed0"
    train_toy(model, cfg)
    items, held = training_set(cfg)
    groups = {
        "memorized (100 and 10 copies)": [(it.name, it.image) for it in items if it.copies >= 10],
        "seen once": [(it.name, it.image) for it in items if it.copies == 1 and not it.family][:args.per_group],
        "never seen": ([(h.name, h.image) for h in held] + faces(args.per_group, cfg.size))[:args.per_group],
    }
    loaded = load_pipeline(str(model), device="cpu")
    rows = []
    for steps in args.steps:
        for group, images in groups.items():
            t0 = time.perf_counter()
            r = drain(null_rate(loaded, images, Budget(steps=steps), 25, 3.0, (cfg.size, cfg.size)))
            rows.append({"search_steps": steps, "group": group, **{k: r[k] for k in
                         ("images", "reconstructed", "rate", "ci_low", "ci_high")},
                         "seconds_per_image": (time.perf_counter() - t0) / len(images),
                         "per_image": [{k: p[k] for k in ("image", "reconstructed", "kind", "share")}
                                       for p in r["per_image"]]})
            print(f"{steps:>5} steps  {group:<30} {r['reconstructed']:>2}/{r['images']:<2} = {r['rate']:.2f} "
                  f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]  {rows[-1]['seconds_per_image']:.1f} s/image", flush=True)
    print("\n| search steps | works | reconstructed | rate [95% CI] |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['search_steps']} | {r['group']} | {r['reconstructed']}/{r['images']} | "
              f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "sampling": {"steps": 25, "guidance": 3.0},
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
