"""Benchmark: precision and recall of the default watermark detector on a labelled set.

    python scripts/bench_watermarks.py --positives 60 --negatives 60
    python scripts/bench_watermarks.py --styles hard --positives 80 --negatives 80

The set is built from real offline photographs (imgextract.markdata): positives carry a
stock-photo wordmark (system fonts, sizes, opacities 0.3-0.8, positions, rotations, diagonal
repeated patterns, bottom credit bars); negatives are clean or carry ordinary text. ``--styles
hard`` draws what a generation's reproduced mark looks like (faint, cut off by the frame, garbled
and blurred, a small corner credit, a translucent band), with negatives whose text shares letters
with a brand; ``all`` draws both.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from imgextract.demo.markdata import HARD_STYLES, OWN_STYLES, labelled_set
from imgextract.stages.watermarks import Detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positives", type=int, default=60)
    ap.add_argument("--negatives", type=int, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--styles", choices=["own", "hard", "all"], default="own")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    styles = {"own": OWN_STYLES, "hard": HARD_STYLES, "all": OWN_STYLES + HARD_STYLES}[args.styles]
    data = labelled_set(args.positives, args.negatives, args.size, args.seed, styles)
    det = Detector()
    det.detect(data[0].image)  # load the OCR models outside the timing
    tp = fp = fn = tn = 0
    wrong_brand = 0
    misses: Counter = Counter()
    marked_by: dict[str, Counter] = {"brand": Counter(), "style": Counter()}
    found_by: dict[str, Counter] = {"brand": Counter(), "style": Counter()}
    t = time.perf_counter()
    for ex in data:
        row = det.detect(ex.image)
        if ex.watermark:
            style = ex.description.split()[0]
            marked_by["brand"][ex.brand] += 1
            marked_by["style"][style] += 1
            found_by["brand"][ex.brand] += bool(row["watermark"])
            found_by["style"][style] += bool(row["watermark"])
        if ex.watermark and row["watermark"]:
            tp += 1
            wrong_brand += row["brand"] != ex.brand
        elif ex.watermark:
            fn += 1
            misses[ex.description.split()[0]] += 1
        elif row["watermark"]:
            fp += 1
        else:
            tn += 1
        if args.verbose and (ex.watermark != row["watermark"]):
            print(f"  {'missed' if ex.watermark else 'false alarm'}: {ex.description!r} read {row['text']!r}")
    per_image = (time.perf_counter() - t) / len(data)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    print(f"{len(data)} images ({args.positives} marked, {args.negatives} clean or plain text), {args.size}px, "
          f"styles {args.styles} (seed {args.seed})")
    print(f"precision {precision:.3f}  recall {recall:.3f}  (tp {tp}, fp {fp}, fn {fn}, tn {tn}); "
          f"wrong brand on {wrong_brand} hits")
    print(f"misses by style: {dict(misses)}")
    for what in ("brand", "style"):
        print(f"recall per {what}: " + ", ".join(f"{k} {found_by[what][k]}/{n}" for k, n in sorted(marked_by[what].items())))
    print(f"time per image {per_image:.2f} s")


if __name__ == "__main__":
    main()
