"""The replication level: what the near-exact copy verdict refuses but an auditor must still see.

A copy saved at JPEG 20 from a third of its size and enlarged back, blurred or toned no longer agrees
block by block, so :func:`imgextract.copies.judge` refuses it. Every candidate row therefore also gets a
graded level: ``near-exact`` (the verdict found a copy), ``replication`` (the pair screened in on its
thumbnails, :func:`replication_screen`, and :func:`replicates` finds a copy once both sides are blurred
alike and the tones matched; or SSCD >= 0.7), ``partial replication`` (SSCD 0.5-0.7), ``none``.
Calibrated on the null of distinct photographs and the canvas negatives of ``scripts/bench_verdict.py``
(docs/findings.md, "The replication level").
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from imgextract.copies import Judgement, Prepared, grey, judge
from imgextract.rule import CopyRule


LEVELS = ("near-exact", "replication", "partial replication", "none")
REPLICATION_SCREEN = 0.75  # grey thumbnails (32 x 32 block means) correlate at least this, shifted by up to
REPLICATION_SHIFT = 2      # this many blocks, before a pair is tested (heavy near-copies: 0.96 and up; a real SD 1.4
                           # replication, a sneaker re-staged, 0.81). The screen saves work; the test keeps the null
                           # clean: of 8,832 pairs of distinct photographs 66 correlate >= 0.6 and none replicates
REPLICATION_WINDOW = 8     # ...or, for a copied portion (the whole thumbnails then correlate weakly: 0.2-0.7 for half
REPLICATION_LOCAL = 0.9    # an image copied under JPEG 25), at least REPLICATION_LOCAL_SHARE of the detailed windows
REPLICATION_LOCAL_SHARE = 0.25  # of 8 x 8 blocks (stride 4) correlate >= 0.9, shifted by up to a block (the null of
                           # 2,208 pairs of distinct photographs: at most 0.16; heavy half copies 0.3-0.95)
REPLICATION_DETAIL = 0.02  # a thumbnail flatter than this (grey std, [0, 1]) correlates by chance: never screened in
REPLICATION_BLUR = 2.5     # the test: both images blurred alike (Gaussian radius in pixels at the judged size)...
SSCD_BANDS = (0.5, 0.7)    # the field's: SSCD > 0.5 "replicated content" (Somepalli et al.), > 0.7 "memorized" (Wen et al.)


def replication_scores(gen_blocks: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """Per candidate: the best zero-mean correlation of the two grey thumbnails over shifts of up to
    ``REPLICATION_SHIFT`` blocks (0 for a flat candidate): the screen before :func:`replicates`. ``gen_blocks``
    (by, bx, 3); ``thumbs`` (m, by, bx, 3), fitted to the generation's size (``distance.block_means``): no decode.

    Every shift at once: the generation zero-padded, one window of it per shift, so each overlap's sums are
    three products over all candidates (25 shifts in a loop took twice as long)."""
    g = grey(gen_blocks.astype(np.float32)).astype(np.float64)
    t = np.stack([grey(x.astype(np.float32)) for x in thumbs]).astype(np.float64) if len(thumbs) else \
        np.zeros((0, *g.shape))
    by, bx = g.shape
    r = REPLICATION_SHIFT
    if not len(t) or by <= 2 * r or bx <= 2 * r:
        return np.zeros(len(t))
    flat = t.reshape(len(t), -1).std(axis=1) < REPLICATION_DETAIL
    # window [r - dy, r - dx] of the padded generation holds g[y + dy, x + dx] over t[y, x] (0 outside g)
    gw = sliding_window_view(np.pad(g, r), (by, bx))
    inside = sliding_window_view(np.pad(np.ones_like(g), r), (by, bx))
    n = inside.sum(axis=(2, 3))
    sa, saa = gw.sum(axis=(2, 3)) / n, (gw * gw).sum(axis=(2, 3)) / n
    sb = np.einsum("ijyx,myx->mij", inside, t) / n
    sbb = np.einsum("ijyx,myx->mij", inside, t * t) / n
    sab = np.einsum("ijyx,myx->mij", gw, t) / n
    den = np.sqrt(np.maximum(saa - sa * sa, 0.0) * np.maximum(sbb - sb * sb, 0.0))
    ncc = np.where(den > 1e-10, (sab - sa * sb) / np.maximum(den, 1e-10), 0.0)
    best = np.maximum(ncc.reshape(len(t), -1).max(axis=1), 0.0)
    best[flat] = 0.0
    return best


def replication_local_shares(gen_blocks: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
    """Per candidate: the share of its detailed windows (``REPLICATION_WINDOW`` blocks a side, stride half that; grey
    std >= 1.5 x ``REPLICATION_DETAIL``) whose grey thumbnail correlates with the generation's at least
    ``REPLICATION_LOCAL``, shifted by up to a block. The screen's second test: a copied portion correlates window by
    window where the whole thumbnails do not. Shapes as :func:`replication_scores`."""
    g = grey(gen_blocks.astype(np.float32))
    t = np.stack([grey(x.astype(np.float32)) for x in thumbs]) if len(thumbs) else np.zeros((0, *g.shape), np.float32)
    by, bx = g.shape
    w = REPLICATION_WINDOW
    if not len(t) or by < w + 2 or bx < w + 2:
        return np.zeros(len(t))
    ys, xs = np.meshgrid(np.arange(0, by - w + 1, w // 2), np.arange(0, bx - w + 1, w // 2), indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    iy, ix = np.arange(w)[:, None], np.arange(w)[None, :]

    def centred(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a0 = a - a.mean(axis=(-2, -1), keepdims=True)
        return a0, np.sqrt((a0 ** 2).mean(axis=(-2, -1)))
    tw, tsd = centred(t[:, ys[:, None, None] + iy, xs[:, None, None] + ix])           # (m, W, w, w)
    best = np.full(tsd.shape, -1.0)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ok = (ys + dy >= 0) & (ys + dy + w <= by) & (xs + dx >= 0) & (xs + dx + w <= bx)
            gy, gx = np.clip(ys + dy, 0, by - w), np.clip(xs + dx, 0, bx - w)
            gw, gsd = centred(g[gy[:, None, None] + iy, gx[:, None, None] + ix])        # (W, w, w)
            den = tsd * gsd[None]
            ncc = np.where(den > 1e-10, (tw * gw[None]).mean(axis=(-2, -1)) / np.maximum(den, 1e-10), -1.0)
            best = np.maximum(best, np.where(ok[None], ncc, -1.0))
    detailed = tsd >= 1.5 * REPLICATION_DETAIL
    return np.where(detailed.any(axis=1), ((best >= REPLICATION_LOCAL) & detailed).sum(axis=1)
                    / np.maximum(detailed.sum(axis=1), 1), 0.0)


def replication_screen(gen_blocks: np.ndarray, thumbs: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """Which candidates :func:`replicates` tests: whole thumbnails correlating >= ``REPLICATION_SCREEN``, or windows
    correlating over ``REPLICATION_LOCAL_SHARE`` of the detailed ones (``scores``: replication_scores, if at hand)."""
    scores = replication_scores(gen_blocks, thumbs) if scores is None else scores
    passed = scores >= REPLICATION_SCREEN
    if (~passed).any():
        rest = np.flatnonzero(~passed)
        passed[rest] = replication_local_shares(gen_blocks, thumbs[rest]) >= REPLICATION_LOCAL_SHARE
    return passed


def channel_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's mean and spread of an (H, W, C) float32 array, as matrix-vector products: numpy's
    reductions over the two leading axes took 3.5 ms at 256 px, this 0.4 ms (a tenth of a pair's test)."""
    flat = a.reshape(-1, a.shape[-1])
    ones = np.ones(len(flat), np.float32)
    mean = ones @ flat / len(flat)
    d = flat - mean
    return mean, np.sqrt(ones @ (d * d) / len(flat))


class Softened:
    """One side of :func:`replicates`, blurred once (``REPLICATION_BLUR``) with its channels' mean and spread: a
    generation tested against several candidates, or a training image many generations are tested against, is
    blurred and (the training side) prepared for the verdict once."""

    def __init__(self, side: Prepared):
        from PIL import ImageFilter
        self.image = Image.fromarray(side.pixels).filter(ImageFilter.GaussianBlur(REPLICATION_BLUR))
        self.floats = np.asarray(self.image, np.float32)
        self.mean, self.std = channel_moments(self.floats)
        self._prepared: Prepared | None = None

    @property
    def prepared(self) -> Prepared:
        if self._prepared is None:
            self._prepared = Prepared(np.asarray(self.image))
        return self._prepared

    def toned(self, other: Softened) -> np.ndarray:
        """These pixels with each channel's mean and spread moved to ``other``'s, as uint8. The pixels are integers,
        so the float arithmetic is done once per value (a table of 256 per channel) and applied by Pillow: bit for
        bit the arithmetic on every pixel, in a tenth of its time."""
        values = np.arange(256, dtype=np.float32)[:, None]
        table = np.clip((values - self.mean) / np.maximum(self.std, 1.0) * other.std + other.mean + 0.5, 0, 255)
        return np.asarray(self.image.point(table.astype(np.uint8).T.ravel().tolist()))


def replicates(gen: Prepared | Softened, train: Prepared | Softened, rule: CopyRule = CopyRule()) -> Judgement:
    """The verdict on a pair the near-exact test refused, made tolerant of what a near-copy goes through: both
    images blurred alike (``REPLICATION_BLUR``) and the generation's tone matched to the training image's (each
    channel's mean and spread), then judged as :func:`judge` judges. Compression, blur, resizing and tone no
    longer decide; the blocks must still correlate, which distinct photographs and another object on the same
    canvas do not (the null and the canvas negatives of ``scripts/bench_verdict.py``)."""
    g = gen if isinstance(gen, Softened) else Softened(gen)
    t = train if isinstance(train, Softened) else Softened(train)
    return judge(g.toned(t), t.prepared, rule)


def replication_level(kind: str, replicated: bool = False, sscd: float | None = None) -> str:
    """``near-exact`` (the copy verdict found a copy), ``replication`` (:func:`replicates` found one, or SSCD >= 0.7),
    ``partial replication`` (SSCD 0.5-0.7), ``none``."""
    if kind != "none":
        return "near-exact"
    has = sscd is not None and sscd == sscd
    if replicated or (has and sscd >= SSCD_BANDS[1]):
        return "replication"
    if has and sscd >= SSCD_BANDS[0]:
        return "partial replication"
    return "none"


def level_words(level: str, sscd: float | None = None) -> str:
    """What a replication the near-exact test refused is, in words."""
    how = f" (SSCD similarity {sscd:.2f})" if sscd is not None and sscd == sscd and sscd >= SSCD_BANDS[0] else ""
    if level == "replication":
        return (f"a replication, not a near-exact copy{how}: the image reproduced under compression, blur, "
                "resizing or a tone change, which the near-exact test does not accept")
    if level == "partial replication":
        return f"a partial replication{how}, between the field's SSCD bands 0.5 and 0.7"
    return ""
