"""Benchmark: is the copy verdict right? False flags on a null of distinct photographs, recall per kind.

    python scripts/bench_verdict.py --size 256 --crops 4

Null: every offline photograph (24 sources), ``--crops`` views each (the whole, then random crops
of 35-90%), and every ordered pair of views of *different* sources judged as (generation,
training image): at the defaults 24 x 4 views give 4,416 pairs. Textures (brick, grass, gravel,
moon, microaneurysms, cell) are among them: the look-alikes that fooled plain tiled L2.

Positives, each judged against the training image(s) it copies:
  whole      a view under one of JPEG q50-90, noise s2-8, resize 0.5-0.9, blur r0.4-1, tone +-8%;
  crop       2-10% cut from the sides, resized back (every pixel moves);
  portion    45-65% of a view (a band from one side), the rest another photograph;
  template   a background shared by 3 training images that differ in a window (25% of the area);
             the generation has new content there; judged against the 3 family members.
Small null (``--small 32``): at 32 px, where a block is 8 px, every view blurred (1/40 to 1/10 of its
side) or blurred and washed toward a flat blue, judged against a sharp view of every other source:
what an undertrained toy draws under captions it never saw (8,832 pairs at the defaults).
Negatives besides the null: a 6% block of a training image in an unrelated photograph; another
object on the same flat canvas as a training image's object.
Share (last, its own generator): composites whose copied share is known (whole 1.0, portions of
10-90%, a template member's background 0.75); the mean and largest error of the share a finding
states, beside the share of detailed blocks that was stated before.
Replication level (last, its own generator): heavy near-copies (a 35-60% copy at JPEG 20-40, enlarged
back, maybe blurred and toned) graded near-exact / replication / none, and the null and the canvas
negatives graded too: the level must keep them at none. Robustness (last): recall per distortion a
guard meets (JPEG q30-95, blur, tone, resizes 0.5x/2x and back, crops of 5-10%), by the verdict and by
the level.

It prints false flags (any kind but none) and recall per kind, and the same for Carlini's plain
tiled L2 < 0.15 side by side (the verdict before this one), on the same pairs; then how many null
pairs the scan's thumbnail screen (copies.screen) lets through, and how many of the copies the
verdict finds it would have dropped (each printed: the screen is measured, not proven).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from imgextract.copies import CopyRule, Prepared, judge, mark_templates, screen, screen_scores
from imgextract.replication import replicates, replication_level, replication_screen
from imgextract.demo import composites as cp
from imgextract.distance import block_means, exact_distances


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def screened(gen: np.ndarray, train: np.ndarray, rule: CopyRule) -> bool:
    """Whether the scan's thumbnail screen lets the pair through to the verdict."""
    return bool(screen(block_means(gen), block_means(train)[None], rule)[0])


def carlini(gen: np.ndarray, train: np.ndarray) -> bool:
    return bool(exact_distances(gen, [train])[0][0] < 0.15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--crops", type=int, default=4, help="views per photograph in the null")
    ap.add_argument("--positives", type=int, default=60, help="positives per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", type=int, default=32, help="side of the small, flat null (0: skip it)")
    for name, default in vars(CopyRule()).items():
        if isinstance(default, float):
            ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=default)
    args = ap.parse_args()
    rule = CopyRule(**{k: getattr(args, k) for k, v in vars(CopyRule()).items() if isinstance(v, float)})
    rng = np.random.default_rng(args.seed)
    size = args.size
    views = {s: cp.crops(s, size, args.crops, rng) for s in cp.SOURCES}

    t0 = time.perf_counter()
    flags, carlini_flags, pairs, passed, examples = 0, 0, 0, 0, []
    for a, b in itertools.permutations(cp.SOURCES, 2):
        for va in views[a]:
            for vb in views[b]:
                if rng.random() > 0.5:   # one ordered direction per pair on average: ~the unordered count
                    continue
                g, t = arr(va), arr(vb)
                j = judge(g, t, rule)
                pairs += 1
                carlini_flags += carlini(g, t)
                passed += screened(g, t, rule)
                if j.kind != "none":
                    flags += 1
                    examples.append((a, b, j.kind, round(j.share, 3), round(j.tiled_l2, 3)))
    null_s = time.perf_counter() - t0
    print(f"null: {pairs} pairs of distinct photographs (different sources, crops included), {null_s:.0f} s "
          f"({1000 * null_s / pairs:.1f} ms per pair)")
    print(f"  false flags: verdict {flags}, plain tiled L2 < 0.15 {carlini_flags}; the scan's thumbnail screen "
          f"lets {passed} ({passed / pairs:.1%}) through to the verdict")
    for e in examples[:10]:
        print("   ", e)

    dropped = {}

    def recall(kind: str, cases) -> None:
        got, plain, kinds = 0, 0, {}
        for gen, trains, expected in cases:
            js = [judge(arr(gen), arr(t), rule) for t in trains]
            mark_templates(js)
            found = [(j, t) for j, t in zip(js, trains) if j.kind != "none"]
            misses = [(j, t) for j, t in found if not screened(arr(gen), arr(t), rule)]
            miss = len(misses)
            for j, t in misses:
                area, share = screen_scores(block_means(arr(gen)), block_means(arr(t))[None], rule)[0]
                print(f"    screen drops a {j.kind} copy ({kind}): verdict share {j.share:.2f}, offset {j.offset}; "
                      f"screen area {area:.2f}, share {share:.2f}")
            dropped[kind] = (dropped.get(kind, (0, 0))[0] + miss, dropped.get(kind, (0, 0))[1] + len(found))
            best = max(js, key=lambda j: ({"whole": 3, "template": 2, "portion": 1, "none": 0}[j.kind], j.share))
            kinds[best.kind] = kinds.get(best.kind, 0) + 1
            got += best.kind in expected
            plain += any(carlini(arr(gen), arr(t)) for t in trains)
        n = len(cases)
        print(f"{kind:9s} recall {got / n:.3f} ({got}/{n}; kinds {kinds}); plain tiled L2 {plain / n:.3f}")

    names = list(cp.SOURCES)
    pick = lambda: names[int(rng.integers(len(names)))]  # noqa: E731
    n = args.positives
    whole = []
    for _ in range(n):
        t = views[pick()][int(rng.integers(args.crops))]
        whole.append((cp.distorted(t, rng)[0], [t], {"whole"}))
    recall("whole", whole)
    crop = []
    for _ in range(n):
        t = views[pick()][int(rng.integers(args.crops))]
        crop.append((cp.small_crop(t, float(rng.uniform(0.02, 0.10)), rng), [t], {"whole", "portion"}))
    recall("crop", crop)
    portions = []
    for _ in range(n):
        a, b = rng.choice(names, 2, replace=False)
        t = views[a][int(rng.integers(args.crops))]
        portions.append((cp.portion(t, views[b][int(rng.integers(args.crops))], float(rng.uniform(0.45, 0.65)), rng),
                         [t], {"portion"}))
    recall("portion", portions)
    templates = []
    for _ in range(n):
        bg, *contents = rng.choice(names, 5, replace=False)
        background = views[bg][int(rng.integers(args.crops))]
        members = [cp.templated(background, views[c][int(rng.integers(args.crops))]) for c in contents[:3]]
        gen = cp.templated(background, views[contents[3]][int(rng.integers(args.crops))])
        templates.append((gen, members, {"template"}))
    recall("template", templates)

    blocks, canvas = [], []
    for _ in range(n):
        a, b = rng.choice(names, 2, replace=False)
        t = views[a][int(rng.integers(args.crops))]
        blocks.append((cp.block_in(views[b][0], t, 0.25, rng), [t], {"none"}))
        canvas.append((cp.on_canvas(views[b][1], size), [cp.on_canvas(views[a][1], size)], {"none"}))
    recall("6% block", blocks)
    recall("canvas", canvas)
    print("the scan's thumbnail screen would have dropped, of the copies the verdict finds: " +
          ", ".join(f"{k} {m}/{n}" for k, (m, n) in dropped.items() if k in ("whole", "crop", "portion", "template")))
    if args.small:   # last: the positives above are drawn as before it existed
        small_null(args.small, args.crops, rule, rng)
    share_error(views, args.crops, n, rule, np.random.default_rng(args.seed + 1))
    replication(views, args.crops, n, rule, np.random.default_rng(args.seed + 2))
    robustness(views, args.crops, n, rule, np.random.default_rng(args.seed + 3))


def distortions():
    """What a guard meets, each at a fixed strength: (name, function of (image, rng))."""
    from PIL import Image

    def resized(f):
        def go(im, _rng):
            w, h = im.size
            return im.resize((max(8, round(w * f)), max(8, round(h * f))), Image.BICUBIC).resize((w, h), Image.BICUBIC)
        return go
    out = [(f"jpeg q{q}", lambda im, _r, q=q: cp.jpeg(im, q)) for q in (30, 50, 70, 95)]
    out += [(f"blur {r}px", lambda im, _r, r=r: cp.blur(im, r)) for r in (1.0, 2.0)]
    out += [(f"tone x{g}{b:+d}", lambda im, _r, g=g, b=b: cp.tone(im, g, b)) for g, b in ((0.85, 15), (1.15, -15))]
    out += [(f"resize {f}x and back", resized(f)) for f in (0.5, 2.0)]
    out += [(f"crop {c:.0%}", lambda im, r, c=c: cp.small_crop(im, c, r)) for c in (0.05, 0.10)]
    return out


def robustness(views: dict, crops: int, n: int, rule: CopyRule, rng: np.random.Generator) -> None:
    """Recall per distortion, by the near-exact verdict and by the graded level (near-exact or replication), on
    whole copies of views of every source: what scan, guard and serve all grade the same way."""
    names = list(cp.SOURCES)
    print(f"robustness ({n} whole copies per distortion): near-exact verdict / graded level (near-exact or replication)")
    for name, distort in distortions():
        exact = listed = 0
        for _ in range(n):
            t = views[names[int(rng.integers(len(names)))]][int(rng.integers(crops))]
            got = level(arr(distort(t, rng)), arr(t), rule)
            exact += got == "near-exact"
            listed += got != "none"
        print(f"  {name:22s} {exact / n:.3f} / {listed / n:.3f}")


def level(gen: np.ndarray, train: np.ndarray, rule: CopyRule) -> str:
    """The replication level as the scan grades a pair: the verdict, then the thumbnail screen and the tolerant test."""
    j = judge(gen, train, rule)
    screened = replication_screen(block_means(gen), block_means(train)[None])[0]
    return replication_level(j.kind, j.kind == "none" and screened and
                             replicates(Prepared(gen), Prepared(train), rule).kind != "none")


def heavy(im, rng: np.random.Generator):
    """A near-copy as it reaches an auditor: a 35-60% copy saved at JPEG 20-40 and enlarged back, then maybe
    blurred (0.5-2 px) and maybe toned (gain 0.85-1.15, bias +-15)."""
    import io

    from PIL import Image, ImageFilter
    q, f = int(rng.integers(20, 41)), float(rng.uniform(0.35, 0.6))
    w, h = im.size
    small = im.resize((max(8, int(w * f)), max(8, int(h * f))), Image.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=q)
    out = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((w, h), Image.BICUBIC)
    how = f"jpeg{q} x{f:.2f}"
    if rng.random() < 0.5:
        r = float(rng.uniform(0.5, 2))
        out, how = out.filter(ImageFilter.GaussianBlur(r)), how + f" blur{r:.1f}"
    if rng.random() < 0.5:
        g, b = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15))
        out, how = cp.tone(out, g, b), how + f" tone x{g:.2f}{b:+.0f}"
    return out, how


def replication(views: dict, crops: int, n: int, rule: CopyRule, rng: np.random.Generator) -> None:
    """The graded level: heavy near-copies (``heavy``) found as near-exact copies or replications, and the null of
    distinct photographs and the canvas negatives kept clean (no level above none)."""
    names = list(cp.SOURCES)
    t0 = time.perf_counter()
    flags, pairs = [], 0
    for a, b in itertools.permutations(names, 2):
        for va in views[a][:2]:
            for vb in views[b][:2]:
                if rng.random() > 0.5:
                    continue
                pairs += 1
                if level(arr(va), arr(vb), rule) != "none":
                    flags.append((a, b))
    canvas = sum(level(arr(cp.on_canvas(views[a][1], 256)), arr(cp.on_canvas(views[b][1], 256)), rule) != "none"
                 for a, b in itertools.permutations(names, 2))
    print(f"replication level: null of {pairs} pairs of distinct photographs, false flags {len(flags)} "
          f"({len(flags) / pairs:.4f}); another object on the same canvas, {len(names) * (len(names) - 1)} pairs: "
          f"{canvas} flagged ({time.perf_counter() - t0:.0f} s)")
    levels: dict[str, int] = {}
    refused = []
    for _ in range(3 * n):
        t = views[names[int(rng.integers(len(names)))]][int(rng.integers(crops))]
        gen, how = heavy(t, rng)
        got = level(arr(gen), arr(t), rule)
        levels[got] = levels.get(got, 0) + 1
        if got == "none":
            refused.append(how)
    total = sum(levels.values())
    print(f"  heavy near-copies ({total}): near-exact {levels.get('near-exact', 0)}, replication "
          f"{levels.get('replication', 0)}, none {levels.get('none', 0)}: listed {1 - levels.get('none', 0) / total:.3f}"
          f" (the near-exact test alone {levels.get('near-exact', 0) / total:.3f})")
    for how in refused[:10]:
        print("    missed:", how)
    # what a re-staged copy looks like: half or more of the image copied, the rest new, then heavily compressed
    names_far = {a: [b for b in names if b != a] for a in names}
    graded: dict[str, int] = {}
    for _ in range(n):
        a = names[int(rng.integers(len(names)))]
        t = views[a][int(rng.integers(crops))]
        other = views[names_far[a][int(rng.integers(len(names_far[a])))]][0]
        gen, how = heavy(cp.portion(t, other, float(rng.uniform(0.5, 0.7)), rng), rng)
        got = level(arr(gen), arr(t), rule)
        graded[got] = graded.get(got, 0) + 1
    print(f"  heavy portions ({n}: 50-70% copied, the rest new, then as above): near-exact "
          f"{graded.get('near-exact', 0)}, replication {graded.get('replication', 0)}, none {graded.get('none', 0)}: "
          f"listed {1 - graded.get('none', 0) / n:.3f} (the near-exact test alone {graded.get('near-exact', 0) / n:.3f})")


def share_error(views: dict, crops: int, n: int, rule: CopyRule, rng: np.random.Generator) -> None:
    """The share a finding states against composites whose copied share is known: whole copies under a
    distortion (1.0), portions of 10-90% of a view (a band from one side), template members' shared
    background (0.75: all but the window). Per kind, the mean and largest absolute error of ``copied_share``
    (the copied region) and, beside it, of the share of detailed blocks it replaced (what it was)."""
    names = list(cp.SOURCES)
    cases: dict[str, list] = {"whole": [], "portion": [], "template": []}
    for _ in range(n):
        a, b, c, d = rng.choice(names, 4, replace=False)
        t = views[a][int(rng.integers(crops))]
        cases["whole"].append((cp.distorted(t, rng)[0], t, 1.0))
        share = float(rng.uniform(0.1, 0.9))
        cases["portion"].append((cp.portion(t, views[b][int(rng.integers(crops))], share, rng), t, share))
        member = cp.templated(t, views[c][int(rng.integers(crops))])
        w = cp.WINDOW
        cases["template"].append((cp.templated(t, views[d][int(rng.integers(crops))]), member,
                                  1 - (w[2] - w[0]) * (w[3] - w[1])))
    print("copied share against composites with known shares (judged copies only; |error| mean / max):")
    for kind, items in cases.items():
        now, was, judged, missed = [], [], 0, 0
        for gen, train, truth in items:
            j = judge(arr(gen), arr(train), rule)
            if j.kind == "none":
                missed += 1
                continue
            judged += 1
            now.append(abs(j.share - truth))
            was.append(abs(j.detail_share - truth))
        if judged:
            print(f"  {kind:9s} {judged} judged copies ({missed} not substantial): copied region "
                  f"{np.mean(now):.3f} / {np.max(now):.3f}; detailed blocks (before) {np.mean(was):.3f} / {np.max(was):.3f}")


def small_null(size: int, count: int, rule: CopyRule, rng: np.random.Generator) -> None:
    """The null a small toy meets: blurred and washed-out views (composites.smoothed) of one photograph
    judged against a sharp view of every other source, at ``size`` px (8-px blocks at 32 px)."""
    views = {s: cp.crops(s, size, count, rng) for s in cp.SOURCES}
    t0 = time.perf_counter()
    flags, carlini_flags, pairs, examples = 0, 0, 0, []
    for a, b in itertools.permutations(cp.SOURCES, 2):
        for va in views[a]:
            t = arr(views[b][int(rng.integers(count))])
            for how, g in cp.smoothed(va):
                j = judge(arr(g), t, rule)
                pairs += 1
                carlini_flags += carlini(arr(g), t)
                if j.kind != "none":
                    flags += 1
                    examples.append((a, how, b, j.kind, round(j.share, 3), round(j.tiled_l2, 3)))
    print(f"small null: {pairs} pairs at {size} px, a blurred or washed-out view of one photograph against a "
          f"sharp view of another, {time.perf_counter() - t0:.0f} s")
    print(f"  false flags: verdict {flags}, plain tiled L2 < 0.15 {carlini_flags}")
    for e in examples[:10]:
        print("   ", e)


if __name__ == "__main__":
    main()
