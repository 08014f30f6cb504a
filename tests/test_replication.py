"""The replication level on real photographs: near-copies the near-exact verdict refuses are listed, distinct
photographs and objects on the same canvas are not."""

import numpy as np
from PIL import Image

from imgextract import copies, replication
from imgextract.demo import composites as cp


def arr(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def jpeg_resized(im, quality: int, factor: float):
    import io
    w, h = im.size
    small = im.resize((int(w * factor), int(h * factor)), Image.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((w, h), Image.BICUBIC)


def level_of(gen: np.ndarray, train: np.ndarray) -> str:
    """The replication level as the scan grades a pair: the verdict, then the screen and the tolerant test."""
    from imgextract.distance import block_means
    j = copies.judge(gen, train)
    screened = replication.replication_screen(block_means(gen), block_means(train)[None])[0]
    return replication.replication_level(j.kind, j.kind == "none" and screened and
                                    replication.replicates(copies.Prepared(gen), copies.Prepared(train)).kind != "none")


def test_a_near_copy_the_near_exact_test_refuses_is_a_replication_and_distinct_photographs_are_not():
    from itertools import permutations
    names = ["china", "page", "logo", "astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "moon"]
    views = {n: arr(cp.square(cp.photo(n), 256)) for n in names}
    refused = 0
    for n in names:
        for q, f in ((30, 0.5), (20, 0.35)):        # JPEG 30 of a half-size copy; JPEG 20 of a 35% copy
            gen = arr(jpeg_resized(Image.fromarray(views[n]), q, f))
            level = level_of(gen, views[n])
            assert level in ("near-exact", "replication"), (n, q, f)
            refused += level == "replication"
    assert refused >= 2                                 # china, page and logo at JPEG 20 of a 35% copy, today
    for a, b in permutations(names, 2):                 # distinct photographs: never a replication
        assert level_of(views[a], views[b]) == "none", (a, b)
    for a, b in permutations(names[:5], 2):             # nor another object on the same flat canvas
        assert level_of(arr(cp.on_canvas(Image.fromarray(views[a]), 256)),
                        arr(cp.on_canvas(Image.fromarray(views[b]), 256))) == "none", (a, b)
    assert replication.replication_level("none", False, sscd=0.75) == "replication"
    assert replication.replication_level("none", False, sscd=0.6) == "partial replication"
    assert replication.replication_level("portion") == "near-exact"


def test_a_heavily_compressed_portion_is_screened_in_by_its_windows_and_listed():
    """60% of a photograph copied, the rest another photograph's, saved at JPEG 20 from 35% of its size and
    blurred 1 px: the near-exact test refuses most, the whole
    thumbnails correlate too weakly for the global screen, its windows do not; distinct photographs' windows never
    reach the share."""
    from imgextract.distance import block_means
    names = ["china", "page", "logo", "astronaut", "chelsea", "coffee", "rocket", "camera"]
    by_windows, listed = 0, 0
    for i, n in enumerate(names):
        t = cp.square(cp.photo(n), 256)
        gen = arr(cp.blur(jpeg_resized(cp.portion(t, cp.square(cp.photo(names[i - 1]), 256), 0.6,
                                               np.random.default_rng(i)), 20, 0.35), 1.0))
        train = arr(t)
        g, b = block_means(gen), block_means(train)[None]
        level = level_of(gen, train)
        listed += level != "none"
        if level == "replication" and replication.replication_scores(g, b)[0] < replication.REPLICATION_SCREEN:
            assert replication.replication_local_shares(g, b)[0] >= replication.REPLICATION_LOCAL_SHARE, n
            by_windows += 1
    # today 6 listed (4 replications, china's thumbnails at 0.86, the other three at 0.63-0.75) and 2 near-exact;
    # with the screen as it was (thumbnails >= 0.90 only) 2 were listed
    assert listed >= 5 and by_windows >= 2, (listed, by_windows)
    views = [arr(cp.square(cp.photo(n), 256)) for n in names]
    shares = replication.replication_local_shares(block_means(views[0]), np.stack([block_means(v) for v in views[1:]]))
    assert shares.max() < replication.REPLICATION_LOCAL_SHARE


def test_the_screen_score_is_the_best_correlation_over_every_shift_computed_one_by_one():
    """replication_scores takes every shift at once; the reference here correlates each overlap in turn."""
    from imgextract.distance import block_means
    rng = np.random.default_rng(5)
    views = [arr(cp.square(cp.photo(n), 128)) for n in ("chelsea", "coffee", "rocket", "camera")]
    gen = block_means(views[0])
    thumbs = np.stack([block_means(v) for v in views[1:]] + [np.roll(gen, (1, -2), axis=(0, 1))
                      + rng.normal(0, 0.02, gen.shape).astype(np.float32), np.full_like(gen, 0.5)])

    def reference(g, t):
        g, t = copies.grey(g), copies.grey(t)
        by, bx, r, best = *g.shape, replication.REPLICATION_SHIFT, 0.0
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                a = g[max(0, dy):by + min(0, dy), max(0, dx):bx + min(0, dx)].astype(np.float64)
                b = t[max(0, -dy):by + min(0, -dy), max(0, -dx):bx + min(0, -dx)].astype(np.float64)
                a, b = a - a.mean(), b - b.mean()
                den = np.sqrt((a * a).mean() * (b * b).mean())
                best = max(best, (a * b).mean() / den if den > 1e-10 else 0.0)
        return 0.0 if t.std() < replication.REPLICATION_DETAIL else best
    got = replication.replication_scores(gen, thumbs)
    want = np.array([reference(gen, t) for t in thumbs])
    assert np.allclose(got, want, atol=1e-6), (got, want)
    assert got[3] > 0.9 and got[4] == 0.0         # the shifted copy found at its shift; a flat one never screened


def test_channel_moments_are_each_channels_mean_and_spread():
    a = np.random.default_rng(1).random((37, 53, 3)).astype(np.float32) * 255
    mean, std = replication.channel_moments(a)
    assert np.allclose(mean, a.astype(np.float64).mean(axis=(0, 1)), rtol=1e-5)
    assert np.allclose(std, a.astype(np.float64).std(axis=(0, 1)), rtol=1e-5)
