"""What counts as a copy: the verdict on one (generation, training image) pair, with its kind.

Cooper & Grimmelmann call an image memorized when a near-exact copy of *a substantial portion*
of it can be drawn from the model; Carlini et al.'s tiled L2 sees only whole, pixel-aligned
copies and is fooled by look-alike grey textures. The judgement here:

1. **Register.** The training image (already fitted to the generation's size) is aligned to the
   generation by phase correlation over a few zooms (a crop of up to ~10% then resized is a zoom
   plus a shift), at 128 px, then the shift is refined at full resolution. ``offset`` reports it.
2. **Blocks.** Pairs larger than ``WORK`` (256 px) are judged box-downsampled to it. The generation
   is cut into a grid of blocks: 16×16 (16 px blocks at 256 px), halved for small images until a
   block has at least ``MIN_BLOCK`` pixels a side (4×4 at 32 px). A block is *copied* when it has detail (the training block's grey std is at least
   ``detail``: a flat sky or blank canvas is not a copy of anything expressive), it is near-exact
   (RMS over RGB below ``block_rms``), and its structure agrees (zero-mean correlation of the grey
   pixels at least ``block_ncc``). The last test is what look-alike textures fail: brick and a
   retina micrograph sit within 0.15 RMS of each other, but their pixels do not correlate.
3. **Share.** "A substantial portion of a specific image" is measured in that image's expressive
   content: ``copied_share`` = copied blocks / the training image's detailed blocks, and
   ``copied_area`` = copied blocks / all blocks (the generation's area). A copy is substantial when
   ``copied_share >= min_share`` and ``copied_area >= min_area``: half of a smooth moon photograph
   is substantial, a 6% block of a detailed photograph is not, and a few blocks that agree by
   chance in a nearly blank image never are. ``copy_mask`` is the grid as 64 hex digits,
   row-major, most significant bit first (bit 1 = copied).
4. **Kind.** ``whole``: substantial, Carlini's test holds (tiled L2 < threshold, raw or after
   alignment, the registered image covering at least 75% of the generation) and at least
   ``whole_agree`` of the detailed area is copied; ``portion``: substantial otherwise; ``none``.
   Registration moves a copy by at most ``MAX_SHIFT`` (12%) of the image. ``template`` is decided across one generation's
   candidates (:func:`mark_templates`): a portion whose copied region at least two training images
   share near-exactly is the layout they have in common, Webster's *template verbatim*.

Every threshold is calibrated on a null of distinct real photographs and on held-out copies of
each kind (``scripts/bench_verdict.py``; the figures are in README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from imgextract.distance import FP16_SLACK, tile_edges

MASK = 16                      # copy_mask grid: MASK × MASK blocks over the generation
MIN_BLOCK = 8                  # blocks have at least this many pixels a side: fewer make chance correlations
MIN_BLOCKS = 3                 # and a copy covers at least this many of them (at 32 px: 3 of 16)
ZOOMS = tuple(np.round(np.arange(0.90, 1.1201, 0.02), 2))   # registration search: ±10% in scale
COARSE = 128                   # side at which zooms are searched
WORK = 256                     # larger pairs are judged box-downsampled to this side: calibrated there, 4x cheaper
MAX_SHIFT = 0.12               # registration moves a copy by at most this share of the image (a crop of ~10%)


@dataclass(frozen=True)
class CopyRule:
    """The thresholds of the verdict; the defaults are the calibrated ones (README, "Reading a finding")."""

    threshold: float = 0.15    # Carlini's tiled L2, for whole copies
    grid: int = 4              # Carlini's tiles per side
    min_share: float = 0.25    # substantial: this share of the training image's detailed area, at least...
    min_area: float = 0.10     # ...covering this share of the generation's area (an outline or a few chance blocks never count)
    block_rms: float = 0.10    # a block is near-exact below this RMS (RGB, pixels in [0, 1])...
    block_ncc: float = 0.80    # ...when its grey pixels correlate at least this much...
    detail: float = 0.015      # ...and the training block has detail (grey std in [0, 1] units)
    whole_agree: float = 0.5   # a whole copy: Carlini's test, and this share of the detailed area copied
    align: bool = True         # register the pair (shifted and rescaled copies)


@dataclass
class Judgement:
    kind: str                  # whole | portion | none (template: see mark_templates)
    share: float               # copied_share: copied detailed blocks / the training image's detailed blocks
    mask: np.ndarray           # (MASK, MASK) bool: the copied blocks
    detailed: float            # share of blocks with detail in the (registered) training image
    tiled_l2: float            # after alignment (the raw value is the scan's own tiled_l2)
    offset: tuple = (0, 0, 1.0)   # (dy, dx) in pixels of the generation, zoom
    area: float = 0.0          # copied_area: copied blocks / all blocks of the generation
    template_members: list = field(default_factory=list)

    @property
    def mask_hex(self) -> str:
        return mask_to_hex(self.mask)


def copy_words(kind: str, share: float, members: int = 0) -> str:
    """``whole copy`` / ``copy of 48% of the image`` / ``copy of the template shared by 3 training images``."""
    if kind == "whole":
        return "whole copy"
    if kind == "template":
        return f"copy of the template shared by {members} training images ({share:.0%} of the image)"
    if kind == "portion":
        return f"copy of {share:.0%} of the image"
    return "no copy"


def mask_to_hex(mask: np.ndarray) -> str:
    """(MASK, MASK) bool → 64 hex digits, row-major, most significant bit first."""
    bits = np.packbits(np.asarray(mask, bool).reshape(-1))
    return bits.tobytes().hex()


def mask_from_hex(text: str) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[: MASK * MASK].reshape(MASK, MASK).astype(bool)


def _grey(a: np.ndarray) -> np.ndarray:
    return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114


def _block_sums(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.add.reduceat(np.add.reduceat(x, ys[:-1], axis=0), xs[:-1], axis=1)


def grid_of(h: int, w: int) -> int:
    """Blocks per side for an image: MASK, halved until blocks are at least MIN_BLOCK pixels (4 at 32 px)."""
    g = MASK
    while g > 1 and min(h, w) / g < MIN_BLOCK:
        g //= 2
    return g


def block_stats(gen: np.ndarray, train: np.ndarray, valid: np.ndarray | None = None) -> dict:
    """Per block of the grid (``grid_of``): RMS (RGB), zero-mean correlation and detail (grey), valid share.

    ``gen``/``train``: float32 (H, W, 3) in [0, 1]; ``valid``: bool (H, W) where ``train`` has pixels."""
    h, w = gen.shape[:2]
    g = grid_of(h, w)
    ys, xs = tile_edges(h, g), tile_edges(w, g)
    v = np.ones((h, w), np.float32) if valid is None else valid.astype(np.float32)
    n = np.maximum(_block_sums(v, ys, xs), 1.0)
    d2 = (((gen - train) ** 2).sum(axis=-1)) * v
    rms = np.sqrt(_block_sums(d2, ys, xs) / (3 * n))
    g, t = _grey(gen) * v, _grey(train) * v
    sg, st = _block_sums(g, ys, xs) / n, _block_sums(t, ys, xs) / n
    vg = np.maximum(_block_sums(g * g, ys, xs) / n - sg ** 2, 0.0)
    vt = np.maximum(_block_sums(t * t, ys, xs) / n - st ** 2, 0.0)
    cov = _block_sums(g * t, ys, xs) / n - sg * st
    ncc = np.where((vg > 1e-8) & (vt > 1e-8), cov / np.sqrt(np.maximum(vg * vt, 1e-16)), 0.0)
    # what independent noise of the observed residual would leave of a perfect correlation
    residual = np.maximum(vg + vt - 2 * cov, 0.0)
    expected = np.sqrt(vt / np.maximum(vt + residual, 1e-16))
    area = np.outer(np.diff(ys), np.diff(xs))
    return {"rms": rms, "ncc": ncc, "expected": expected, "detail": np.sqrt(vt), "valid": n / area}


def _tiled(gen: np.ndarray, train: np.ndarray, grid: int, valid: np.ndarray | None) -> float:
    h, w = gen.shape[:2]
    ys, xs = tile_edges(h, grid), tile_edges(w, grid)
    v = np.ones((h, w), np.float32) if valid is None else valid.astype(np.float32)
    d2 = ((gen - train) ** 2).sum(axis=-1) * v
    n = _block_sums(v, ys, xs)
    area = np.outer(np.diff(ys), np.diff(xs))
    ok = n >= 0.5 * area                        # a tile mostly outside the registered image is not compared
    if not ok.any():
        return float("inf")
    return float(np.sqrt((_block_sums(d2, ys, xs)[ok] / (3 * n[ok])).max()))


def _phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(dy, dx, peak) such that a(y, x) ≈ b(y - dy, x - dx), by phase correlation."""
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    cross = fa * np.conj(fb)
    r = np.fft.irfft2(cross / np.maximum(np.abs(cross), 1e-9), s=a.shape)
    dy, dx = np.unravel_index(int(np.argmax(r)), r.shape)
    h, w = a.shape
    return (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx), float(r.max())


def _zoomed(image: Image.Image, zoom: float, dy: float = 0.0, dx: float = 0.0) -> tuple[Image.Image, np.ndarray]:
    """The image zoomed by ``zoom`` about its centre then shifted by (dy, dx) pixels, and where it has pixels."""
    w, h = image.size
    cx, cy = w / 2, h / 2
    coeffs = (1 / zoom, 0, cx - (dx + cx) / zoom, 0, 1 / zoom, cy - (dy + cy) / zoom)
    out = image.transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    sx, sy = xx * coeffs[0] + coeffs[2], yy * coeffs[4] + coeffs[5]
    return out, (sx >= 0) & (sx <= w) & (sy >= 0) & (sy <= h)


def register(gen: np.ndarray, train: np.ndarray) -> tuple[float, float, float]:
    """(dy, dx, zoom) that best maps the training image onto the generation (uint8 arrays, same size)."""
    h, w = gen.shape[:2]
    side = (COARSE, max(8, round(COARSE * w / h))) if h >= w else (max(8, round(COARSE * h / w)), COARSE)
    g_small = np.asarray(Image.fromarray(gen).convert("L").resize(side[::-1], Image.BILINEAR), np.float32)
    t_img = Image.fromarray(train).convert("L").resize(side[::-1], Image.BILINEAR)
    best = None
    for zoom in ZOOMS:
        t_small = np.asarray(_zoomed(t_img, zoom)[0], np.float32)
        dy, dx, peak = _phase_shift(g_small, t_small)
        if best is None or peak > best[0]:
            best = (peak, zoom, dy * h / side[0], dx * w / side[1])
    _, zoom, dy, dx = best
    coarse, _ = _zoomed(Image.fromarray(train).convert("L"), zoom, dy, dx)   # refine the shift at full size
    fy, fx, _ = _phase_shift(np.asarray(Image.fromarray(gen).convert("L"), np.float32), np.asarray(coarse, np.float32))
    return dy + fy, dx + fx, float(zoom)


def judge(gen: np.ndarray, train: np.ndarray, rule: CopyRule = CopyRule()) -> Judgement:
    """The verdict on one pair: uint8 (H, W, 3) arrays of the same size (the training image fitted).

    Pairs larger than ``WORK`` pixels a side are judged box-downsampled to it (where the thresholds
    were calibrated); the offset is reported in the generation's own pixels."""
    h, w = gen.shape[:2]
    factor = max(h, w) / WORK
    if factor > 1:
        size = (max(16, round(w / factor)), max(16, round(h / factor)))
        small = [np.asarray(Image.fromarray(a).resize(size, Image.BOX)) for a in (gen, train)]
        j = judge(small[0], small[1], rule)
        j.offset = (round(j.offset[0] * h / size[1]), round(j.offset[1] * w / size[0]), j.offset[2])
        return j
    g = gen.astype(np.float32) / 255.0
    t = train.astype(np.float32) / 255.0
    raw = _verdict(g, t, None, rule, (0, 0, 1.0))
    if not rule.align or (raw.kind == "whole" and raw.share >= 0.9):
        return raw
    dy, dx, zoom = register(gen, train)
    if (abs(dy) < 0.5 and abs(dx) < 0.5 and zoom == 1.0) or abs(dy) > MAX_SHIFT * h or abs(dx) > MAX_SHIFT * w:
        return raw
    warped, valid = _zoomed(Image.fromarray(train), zoom, dy, dx)
    aligned = _verdict(g, np.asarray(warped, np.float32) / 255.0, valid, rule, (round(dy), round(dx), zoom))
    order = {"whole": 2, "portion": 1, "none": 0}
    return aligned if (order[aligned.kind], aligned.share) > (order[raw.kind], raw.share) else raw


def _verdict(g: np.ndarray, t: np.ndarray, valid, rule: CopyRule, offset) -> Judgement:
    s = block_stats(g, t, valid)
    detailed = (s["detail"] >= rule.detail) & (s["valid"] >= 0.9)
    copied = detailed & (s["rms"] < rule.block_rms) & (s["ncc"] >= rule.block_ncc * s["expected"])
    blocks = int(copied.sum())
    share = blocks / max(detailed.sum(), 1)                # of the training image's expressive area
    area = copied.sum() / copied.size                      # of the generation's area
    tiled = _tiled(g, t, rule.grid, valid)
    copied = np.repeat(np.repeat(copied, MASK // copied.shape[0], 0), MASK // copied.shape[1], 1)  # stored at MASK
    if share < rule.min_share or area < rule.min_area or blocks < MIN_BLOCKS:  # a copy is substantial
        kind = "none"
    elif tiled < rule.threshold and share >= rule.whole_agree and (valid is None or valid.mean() >= 0.75):
        kind = "whole"
    else:
        kind = "portion"
    return Judgement(kind, float(share), copied, float(detailed.mean()), tiled, offset, float(area))


def mark_templates(judgements: list[Judgement], overlap: float = 0.5) -> None:
    """Across one generation's candidates: portions whose copied regions overlap (IoU ≥ ``overlap``)
    in two or more training images copy the layout those images share: each becomes a ``template``
    naming the others (indices into ``judgements``)."""
    portions = [i for i, j in enumerate(judgements) if j.kind == "portion"]
    for i in portions:
        a = judgements[i].mask
        members = [k for k in portions if k != i and
                   (a & judgements[k].mask).sum() >= overlap * max(1, (a | judgements[k].mask).sum())]
        if members:
            judgements[i].template_members = sorted([i, *members])
    for i in portions:
        if judgements[i].template_members:
            judgements[i].kind = "template"


def screen(gen_blocks: np.ndarray, thumbs: np.ndarray, rule: CopyRule = CopyRule(), shifts: int = 3,
           slack: float = 1.5, size: tuple[int, int] | None = None) -> np.ndarray:
    """Which candidates could hold a substantial copy, from box thumbnails alone (no decode).

    ``gen_blocks``: the generation's block means (by, bx, 3); ``thumbs``: (m, by, bx, 3), the
    candidates' block means fitted to the generation's ``size`` (``distance.block_means``). At zero
    shift it is a bound: a copied block (RMS < ``block_rms``) has block means within ``block_rms`` of
    each other (Jensen), so a candidate with fewer than ``min_area`` of its blocks that close cannot
    be a pixel-aligned copy. Shifts of up to ``shifts`` blocks (about 10% at 32 blocks) with
    ``slack`` on the threshold let moved and rescaled copies through; that part is a screen,
    measured (scripts/bench_verdict.py), not proven.
    """
    g = gen_blocks.astype(np.float32)
    t = thumbs.astype(np.float32)
    by, bx = g.shape[:2]
    need = rule.min_area * by * bx
    d2 = ((t - g[None]) ** 2).mean(axis=-1)
    limit = (rule.block_rms * slack) ** 2
    grid = grid_of(*size) if size else MASK
    if by == bx and by % grid == 0:         # each block is (by/grid)^2 thumbnail blocks: pooled, a proven bound
        f = by // grid
        pooled = d2.reshape(len(t), grid, f, grid, f).mean(axis=(2, 4))
        keep = (pooled < (rule.block_rms + FP16_SLACK) ** 2).sum(axis=(1, 2)) >= rule.min_area * grid * grid
    else:                                    # small images: blocks of a few pixels, screened with the slack
        keep = (d2 < limit).sum(axis=(1, 2)) >= need
    for dy in range(-shifts, shifts + 1):
        for dx in range(-shifts, shifts + 1):
            if (dy, dx) == (0, 0) or keep.all():
                continue
            gy, ty = (slice(dy, by), slice(0, by - dy)) if dy >= 0 else (slice(0, by + dy), slice(-dy, by))
            gx, tx = (slice(dx, bx), slice(0, bx - dx)) if dx >= 0 else (slice(0, bx + dx), slice(-dx, bx))
            d2 = ((t[:, ty, tx] - g[None, gy, gx]) ** 2).mean(axis=-1)
            keep |= (d2 < limit).sum(axis=(1, 2)) >= need
    return keep
