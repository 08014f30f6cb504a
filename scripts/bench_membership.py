"""How many works does membership need? The collection test on a toy trained on a known set.

Trains the membership toy (or takes --model, a toy folder with its train/), computes every image's features
once (its training images, and photographs it never saw), then runs the collection test on random subsets of
n works against n references, many times per n, and the null between halves of the references.

    python scripts/bench_membership.py --out /tmp/bench-membership
    python scripts/bench_membership.py --model runs/toy --references ./never-seen --out /tmp/bm

Prints, per n and fit share: the median p-value and the share of subsets with p < 0.01; and the null's
false-positive rates at 0.01 and 0.05. Figures of one toy on one machine, not of real models.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from imgextract.dataset_inference import collection_test, null_p_values
from imgextract.demo.photos import write_never_seen

SPEC = "6x2,1x10"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work folder (the toy and the references go here)")
    ap.add_argument("--model", type=Path, help="a trained toy folder (default: train the membership toy)")
    ap.add_argument("--references", type=Path, help="never-seen images (default: the tests' 24 photographs)")
    ap.add_argument("--spec", default=SPEC, help="the toy's duplication spec when it is trained here")
    ap.add_argument("--steps", type=int, default=400, help="the toy's denoiser steps (batch 8)")
    ap.add_argument("--subsets", type=int, default=40, help="random subsets per n")
    ap.add_argument("--null-splits", type=int, default=200)
    args = ap.parse_args()

    from imgextract.models.pipelines import load_pipeline
    from imgextract.progress import drain
    from imgextract.sources.images import open_rgb
    from imgextract.stages.membership import features
    from imgextract.stages.settings import MembershipSettings

    model = args.model
    if model is None:
        from imgextract.demo.toy import ToyConfig, train
        model = args.out / "toy"
        t0 = time.monotonic()
        drain(train(model, ToyConfig(seed=0, duplicates=args.spec, vae_steps=100, unet_steps=args.steps, batch_size=8)))
        print(f"toy {args.spec}, {args.steps} steps at batch 8: trained in {time.monotonic() - t0:.0f} s")
    refs_dir = args.references or write_never_seen(args.out / "never-seen")
    works = sorted((model / "train").glob("*.png"))
    refs = sorted(refs_dir.glob("*.png"))
    loaded = load_pipeline(str(model), "cpu")
    settings = MembershipSettings()
    t0 = time.monotonic()
    rows = drain(features(loaded, [open_rgb(p) for p in works + refs], [None] * (len(works) + len(refs)), settings,
                          (32, 32)))
    print(f"features of {len(works)} training images and {len(refs)} never-seen: {time.monotonic() - t0:.1f} s")
    fw, fr = rows[:len(works)], rows[len(works):]
    rng = np.random.default_rng(0)
    print(f"{'works':>5} {'refs':>5} {'fit share':>9} {'median p':>9} {'p < 0.01':>9}")
    for fit_share in (0.5, 0.0):
        for n in range(4, len(works) + 1, 2):
            ps = []
            for s in range(args.subsets):
                w = fw[rng.choice(len(fw), n, replace=False)]
                r = fr[rng.choice(len(fr), n, replace=False)]
                ps.append(collection_test(w, r, fit_share, seed=s).p_value)
            ps = np.array(ps)
            print(f"{n:>5} {n:>5} {fit_share:>9} {np.median(ps):>9.3g} {(ps < 0.01).mean():>9.2f}")
    for fit_share in (0.5, 0.0):
        null = np.array(null_p_values(fr, args.null_splits, fit_share))
        print(f"null, {len(fr) // 2} vs {len(fr) - len(fr) // 2} references, fit share {fit_share}, "
              f"{args.null_splits} splits: p < 0.01 in {(null < 0.01).mean():.3f}, p < 0.05 in {(null < 0.05).mean():.3f}")


if __name__ == "__main__":
    main()
