"""Held-out evaluation of triage scores across toy models the scores were not chosen on.

    python scripts/eval_triage.py --dev "100x1,10x4,1x25@0" \
        --models "100x1,10x4,1x25@1" "50x2,20x3,1x27@2" "100x1,10x4,1x27+faces@3" --samples 8 [--max-evals 8]

A model is ``SCHEDULE@SEED``, with ``+faces`` to add the 200 LFW faces that ship with
scikit-image as extra single-copy images (many more negatives). Each model is trained (or
reused from the cache) with the demo's fixed step counts, indexed, swept (SAMPLES samples per
training caption, 25 DDIM steps, guidance 3) and scanned. Ground truth: a caption is memorized
when most of its samples (rate > 0.5) are memorized by the scan's verdict *against that caption's
own training image* (the toy's copies.csv names it).

Pooled AUC: within a sweep triage only ranks one model's captions, so each score becomes its
within-model percentile rank, pooled over the held-out models that have memorized captions; the
"raw" column pools the scores as they are over every held-out model.

Scores (columns of `imgextract triage`, with their cost in UNet evaluations per caption at 4 seeds):
wen1/wen5 (Wen et al., first step / first 5 steps: 8/40), attn1/attn5 and end1 (cross-attention,
no extra calls), guide1 and agree1 (the first-step guidance on pure noise, after Asthana &
Belagiannis: no extra calls beyond wen1), edge (Webster's one-step edge consistency: 8), and
combinations A+B (mean of the two within-model percentile ranks). A leading "-" flips a sign.

The default is the score with the best pooled AUC on the dev models (the cheapest on a tie, within
--max-evals); the held-out table is printed after the choice is made. The logic lives in
``imgextract.app.triage_eval``; this script only parses the arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from imgextract.app.triage_eval import evaluate_toys
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", nargs="+", default=["100x1,10x4,1x25@0"], help="models the default is chosen on")
    ap.add_argument("--models", nargs="+", required=True, help="held-out models: SCHEDULE@SEED[+faces]")
    ap.add_argument("--samples", type=int, default=8, help="sweep samples per caption (ground truth)")
    ap.add_argument("--max-evals", type=int, default=None, help="only scores within this many UNet evaluations")
    args = ap.parse_args()
    evaluate_toys(args.dev, args.models, args.samples, args.max_evals)


if __name__ == "__main__":
    main()
