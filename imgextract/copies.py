"""What counts as a copy: the verdict on one (generation, training image) pair, with its kind.

Cooper & Grimmelmann call an image memorized when a near-exact copy of *a substantial portion*
of it can be drawn from the model; Carlini et al.'s tiled L2 sees only whole, pixel-aligned
copies and is fooled by look-alike grey textures. The judgement here:

1. **Register.** The training image (already fitted to the generation's size) is aligned to the
   generation by phase correlation over zooms 0.90–1.12 (a crop of up to ~10% then resized is a
   zoom plus a shift): every zoom at 64 px, the best three at 128 px, the shift to a fraction of a
   pixel there. ``offset`` reports it.
2. **Blocks.** Pairs larger than ``WORK`` (256 px) are judged box-downsampled to it. The generation
   is cut into a grid of blocks: 16×16 (16 px blocks at 256 px), halved for small images until a
   block has at least ``MIN_BLOCK`` pixels a side (4×4 at 32 px). A block is *copied* when it has detail (the training block's grey std is at least
   ``detail``: a flat sky or blank canvas is not a copy of anything expressive), it is near-exact
   (RMS over RGB below ``block_rms`` and below ``block_contrast`` times the block's detail), and its
   structure agrees (zero-mean correlation of the grey pixels at least ``block_ncc``, relaxed for
   noise but never under ``ncc_floor``). The correlation is what look-alike textures fail: brick and
   a retina micrograph sit within 0.15 RMS of each other, but their pixels do not correlate. The
   contrast and the floor are what small, smooth images fail: at 32 px a block is 8 px, and a blurred
   generation's gradients meet a photograph's within 0.1 RMS and at 0.6 correlation by chance.
3. **Share.** "A substantial portion of a specific image" is judged in that image's expressive
   content: copied blocks / the training image's detailed blocks (``detail_share``) and copied
   blocks / all blocks. A copy is substantial when the first is at least ``min_share`` and the
   second at least ``min_area``: half of a smooth moon photograph is substantial, a 6% block of a
   detailed photograph is not, and a few blocks that agree by chance in a nearly blank image never
   are. The share a finding states is of the image itself: the copied region is the copied blocks
   grown through the flat blocks that agree near-exactly and touch them (a copied sky is copied too,
   though no flat block proves anything alone); ``copied_share`` = that region / the training
   image's blocks, ``copied_area`` = that region / all blocks (the generation's area), measured
   against composites with known shares by ``scripts/bench_verdict.py``. ``copy_mask`` is the grid as 64 hex digits,
   row-major, most significant bit first (bit 1 = copied).
4. **Kind.** ``whole``: substantial, Carlini's test holds (tiled L2 < threshold, raw or after
   alignment, the registered image covering at least 75% of the generation) and at least
   ``whole_agree`` of the detailed area is copied; ``portion``: substantial otherwise; ``none``.
   Registration moves a copy by at most ``MAX_SHIFT`` (12%) of the image. ``template`` is decided across one generation's
   candidates (:func:`mark_templates`): a portion whose copied region at least two training images
   share near-exactly is the layout they have in common, Webster's *template verbatim*.

Every threshold is calibrated on a null of distinct real photographs and on held-out copies of
each kind (``scripts/bench_verdict.py``; the figures are in docs/findings.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage

from imgextract.distance import tile_edges
from imgextract.rule import CopyRule

MASK = 16                      # copy_mask grid: MASK × MASK blocks over the generation
MIN_BLOCK = 8                  # blocks have at least this many pixels a side: fewer make chance correlations
MIN_BLOCKS = 3                 # and a copy covers at least this many of them (at 32 px: 3 of 16)
ZOOMS = tuple(np.round(np.arange(0.90, 1.1201, 0.02), 2))   # registration search: ±10% in scale
FINE = 64                      # side at which every zoom is searched...
KEEP_ZOOMS = 3                 # ...and the best this many again at
COARSE = 128                   # this side
WORK = 256                     # larger pairs are judged box-downsampled to this side: calibrated there, 4x cheaper
MAX_SHIFT = 0.12               # registration moves a copy by at most this share of the image (a crop of ~10%)


@dataclass
class Judgement:
    kind: str                  # whole | portion | none (template: see mark_templates)
    share: float               # copied_share: the copied region / the training image's blocks (its area)
    mask: np.ndarray           # (MASK, MASK) bool: the copied blocks
    detailed: float            # share of blocks with detail in the (registered) training image
    tiled_l2: float            # after alignment (the raw value is the scan's own tiled_l2)
    offset: tuple = (0, 0, 1.0)   # (dy, dx) in pixels of the generation, zoom
    area: float = 0.0          # copied_area: the copied region / all blocks of the generation
    template_members: list = field(default_factory=list)
    detail_share: float = 0.0  # copied detailed blocks / the training image's detailed blocks: what "substantial" reads
    region: np.ndarray | None = None   # (MASK, MASK) bool: the copied region (copied blocks and the flat ones they enclose)
    masked: bool = False       # judged on a published template's fixed region (judge_masked)
    mse: float = float("nan")  # then also Webster's masked MSE (masked_mse)

    @property
    def mask_hex(self) -> str:
        return mask_to_hex(self.mask if self.region is None else self.region)


def copy_words(kind: str, share: float, members: int = 0, mask: str = "") -> str:
    """``whole copy`` / ``copy of 48% of the image`` / ``copy of the template shared by 3 training images`` /
    ``copy of the published template (mask m.png; 92% of its fixed region)``."""
    if kind == "whole":
        return "whole copy"
    if kind == "template" and mask:
        return f"copy of the published template (mask {mask}; {share:.0%} of its fixed region)"
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


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def grey(a: np.ndarray) -> np.ndarray:
    """Luma of RGB (..., 3) arrays: what every structural test compares."""
    return a @ _LUMA


def _sq_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, the squared difference summed over RGB."""
    d = a - b
    return np.einsum("ijk,ijk->ij", d, d)


@lru_cache(maxsize=256)
def _summing(edges: tuple) -> np.ndarray:
    """(blocks, n) 0/1 matrix: row b sums the pixels of block b along one axis."""
    out = np.zeros((len(edges) - 1, edges[-1]), np.float32)
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        out[b, lo:hi] = 1.0
    return out


def _block_sums(x: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sums of a 2-D array over the blocks the edges cut, as two small matrix products (BLAS)."""
    return _summing(tuple(int(e) for e in ys)) @ x.astype(np.float32, copy=False) @ _summing(tuple(int(e) for e in xs)).T


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
    area = np.outer(np.diff(ys), np.diff(xs)).astype(np.float32)
    if valid is None:
        n = area
        d2 = _sq_diff(gen, train)
        g, t = grey(gen), grey(train)
    else:
        v = valid.astype(np.float32)
        n = np.maximum(_block_sums(v, ys, xs), 1.0)
        d2 = _sq_diff(gen, train) * v
        g, t = grey(gen) * v, grey(train) * v
    rms = np.sqrt(_block_sums(d2, ys, xs) / (3 * n))
    sg, st = _block_sums(g, ys, xs) / n, _block_sums(t, ys, xs) / n
    vg = np.maximum(_block_sums(g * g, ys, xs) / n - sg ** 2, 0.0)
    vt = np.maximum(_block_sums(t * t, ys, xs) / n - st ** 2, 0.0)
    cov = _block_sums(g * t, ys, xs) / n - sg * st
    ncc = np.where((vg > 1e-8) & (vt > 1e-8), cov / np.sqrt(np.maximum(vg * vt, 1e-16)), 0.0)
    # what independent noise of the observed residual would leave of a perfect correlation
    residual = np.maximum(vg + vt - 2 * cov, 0.0)
    expected = np.sqrt(vt / np.maximum(vt + residual, 1e-16))
    return {"rms": rms, "ncc": ncc, "expected": expected, "detail": np.sqrt(vt), "valid": n / area,
            "d2": d2, "v": None if valid is None else v}


def _tiled(s: dict, grid: int) -> float:
    """Carlini's tiled L2 from the per-pixel squared differences ``block_stats`` computed."""
    d2, v = s["d2"], s["v"]
    h, w = d2.shape
    ys, xs = tile_edges(h, grid), tile_edges(w, grid)
    area = np.outer(np.diff(ys), np.diff(xs))
    n = area if v is None else _block_sums(v, ys, xs)
    ok = n >= 0.5 * area                        # a tile mostly outside the registered image is not compared
    if not ok.any():
        return float("inf")
    return float(np.sqrt((_block_sums(d2, ys, xs)[ok] / (3 * n[ok])).max()))


def _spectrum(a: np.ndarray) -> np.ndarray:
    return sfft.rfft2(a - a.mean())


def _affine(size: tuple[int, int], zoom: float, dy: float, dx: float) -> tuple:
    w, h = size
    cx, cy = w / 2, h / 2
    return (1 / zoom, 0, cx - (dx + cx) / zoom, 0, 1 / zoom, cy - (dy + cy) / zoom)


def _zoomed(image: Image.Image, zoom: float, dy: float = 0.0, dx: float = 0.0) -> Image.Image:
    """The image zoomed by ``zoom`` about its centre then shifted by (dy, dx) pixels."""
    return image.transform(image.size, Image.AFFINE, _affine(image.size, zoom, dy, dx), resample=Image.BILINEAR)


def _covered(size: tuple[int, int], zoom: float, dy: float, dx: float) -> np.ndarray:
    """Where :func:`_zoomed` has pixels of the image (bool, H × W)."""
    w, h = size
    c = _affine(size, zoom, dy, dx)
    sx = (np.arange(w, dtype=np.float32) + 0.5) * c[0] + c[2]
    sy = (np.arange(h, dtype=np.float32) + 0.5) * c[4] + c[5]
    return ((sy >= 0) & (sy <= h))[:, None] & ((sx >= 0) & (sx <= w))[None, :]


def _side(h: int, w: int, long: int) -> tuple[int, int]:
    """(width, height) with the long side ``long``, for PIL."""
    return (max(8, round(long * w / h)), long) if h >= w else (long, max(8, round(long * h / w)))


@lru_cache(maxsize=512)
def _zoom_matrix(n: int, zoom: float) -> np.ndarray:
    """(n, n) linear interpolation that zooms a row of n block means about its centre."""
    out = np.zeros((n, n), np.float32)
    src = (np.arange(n) + 0.5 - n / 2) / zoom + n / 2 - 0.5
    lo = np.floor(src).astype(int)
    for i, (k, f) in enumerate(zip(lo, src - lo)):
        for j, wgt in ((k, 1 - f), (k + 1, f)):
            if 0 <= j < n:
                out[i, j] += wgt
    return out


class Prepared:
    """One side of every pair it is judged in, computed once: its pixels at the judged size (``WORK``),
    their floats, its grey spectra at the registration sides (the generation's side), and its grey
    image zoomed and transformed per (side, zoom) (the training side: a training image a sweep's
    samples keep finding is prepared once, not once per sample)."""

    def __init__(self, gen: np.ndarray):
        self.size = gen.shape[:2]
        h, w = self.size
        factor = max(h, w) / WORK
        if factor > 1:
            gen = np.asarray(Image.fromarray(gen).resize((max(16, round(w / factor)), max(16, round(h / factor))),
                                                         Image.BOX))
        self.pixels = gen
        self.floats = gen.astype(np.float32) / 255.0
        self.grey = Image.fromarray(gen).convert("L")
        self._spectra: dict = {}
        self._zoomed: dict = {}

    def spectrum(self, long: int) -> tuple[np.ndarray, tuple[int, int]]:
        """The grey spectrum at the long side ``long``, and that (width, height)."""
        if long not in self._spectra:
            size = _side(*self.pixels.shape[:2], long)
            g = self.grey if size == self.grey.size else self.grey.resize(size, Image.BILINEAR)
            self._spectra[long] = (_spectrum(np.asarray(g, np.float32)), size)
        return self._spectra[long]

    def zoomed_spectra(self, size: tuple[int, int], zooms) -> np.ndarray:
        """The spectra of the grey image at ``size`` (width, height) zoomed by each of ``zooms`` about its
        centre, less its mean, stacked: what registration correlates with the other side's spectrum. The
        zooms not yet made are made together (one stacked product, one FFT): a training image seen once
        pays for its fifteen zooms in two calls, not fifteen."""
        todo = [z for z in dict.fromkeys(zooms) if (size, z) not in self._zoomed]
        if todo:
            if size not in self._zoomed:
                self._zoomed[size] = np.asarray(self.grey.resize(size, Image.BILINEAR), np.float32)
            t = self._zoomed[size]
            z = np.stack([_zoom_matrix(size[1], zm) for zm in todo]) @ t @ \
                np.stack([_zoom_matrix(size[0], zm).T for zm in todo])
            z -= np.array([a.mean() for a in z], np.float32)[:, None, None]
            for zm, spectrum in zip(todo, sfft.rfft2(z)):
                self._zoomed[(size, zm)] = spectrum
        return np.stack([self._zoomed[(size, z)] for z in zooms])


def register(gen: np.ndarray | Prepared, train: np.ndarray | Prepared) -> tuple[float, float, float]:
    """(dy, dx, zoom) that best maps the training image onto the generation (uint8 arrays of the judged size,
    or either :class:`Prepared`).

    Coarse to fine: every zoom at ``FINE`` px, the best ``KEEP_ZOOMS`` again at ``COARSE`` px, the
    shift to a fraction of a pixel there (a parabola through the correlation peak); images of
    ``COARSE`` px or less have the shift refined at their own size."""
    gen = gen if isinstance(gen, Prepared) else Prepared(gen)
    train = train if isinstance(train, Prepared) else Prepared(train)
    h, w = gen.pixels.shape[:2]

    def peaks(long: int, zooms) -> list[tuple[float, float, float, float]]:
        fg, size = gen.spectrum(long)
        cross = fg * np.conj(train.zoomed_spectra(size, zooms))
        H, W = size[1], size[0]
        r = sfft.irfft2(cross / np.maximum(np.abs(cross), 1e-9), s=(H, W))
        out = []
        for i, zoom in enumerate(zooms):
            py, px = np.unravel_index(int(r[i].argmax()), (H, W))
            c = r[i, py, px]
            # sub-pixel: a parabola through the peak and its neighbours (the registration's precision)
            up, down, left, right = r[i, py - 1, px], r[i, (py + 1) % H, px], r[i, py, px - 1], r[i, py, (px + 1) % W]
            oy = 0.5 * (up - down) / (up - 2 * c + down) if up - 2 * c + down < 0 else 0.0
            ox = 0.5 * (left - right) / (left - 2 * c + right) if left - 2 * c + right < 0 else 0.0
            dy = (py - H if py > H // 2 else py) + float(np.clip(oy, -0.5, 0.5))
            dx = (px - W if px > W // 2 else px) + float(np.clip(ox, -0.5, 0.5))
            out.append((float(c), float(zoom), dy * h / H, dx * w / W))
        return sorted(out, reverse=True)

    best = peaks(FINE, ZOOMS)[:KEEP_ZOOMS]
    _, zoom, dy, dx = peaks(COARSE, [b[1] for b in best])[0]
    if max(h, w) <= COARSE:   # small images: the shift again at their own pixels (measured better at 32 px)
        fg, size = gen.spectrum(max(h, w))
        moved = np.asarray(_zoomed(train.grey, zoom, dy, dx), np.float32)
        cross = fg * np.conj(_spectrum(moved))
        r = sfft.irfft2(cross / np.maximum(np.abs(cross), 1e-9), s=moved.shape)
        fy, fx = np.unravel_index(int(r.argmax()), r.shape)
        dy += fy - h if fy > h // 2 else fy
        dx += fx - w if fx > w // 2 else fx
    return dy, dx, zoom


def judge(gen: np.ndarray | Prepared, train: np.ndarray | Prepared, rule: CopyRule = CopyRule()) -> Judgement:
    """The verdict on one pair: uint8 (H, W, 3) arrays of the same size (the training image fitted).

    Either side may be :class:`Prepared` once for all its pairs (a prepared training image must come from
    the array fitted to this generation's size). Pairs larger than ``WORK`` pixels a side are judged
    box-downsampled to it (where the thresholds were calibrated); the offset is reported in the
    generation's own pixels."""
    gen = gen if isinstance(gen, Prepared) else Prepared(gen)
    h0, w0 = gen.size
    h, w = gen.pixels.shape[:2]
    if not isinstance(train, Prepared):
        if (h, w) != train.shape[:2]:
            train = np.asarray(Image.fromarray(train).resize((w, h), Image.BOX))
        train = Prepared(train)
    if train.pixels.shape[:2] != (h, w):
        raise ValueError(f"a training image prepared at {train.size} is judged against a generation of {gen.size}")
    j = _verdict(gen.floats, train.floats, None, rule, (0, 0, 1.0))
    if rule.align and not (j.kind == "whole" and j.detail_share >= 0.9):
        dy, dx, zoom = register(gen, train)
        moved = not (abs(dy) < 0.5 and abs(dx) < 0.5 and zoom == 1.0)
        if moved and abs(dy) <= MAX_SHIFT * h and abs(dx) <= MAX_SHIFT * w:
            warped = _zoomed(Image.fromarray(train.pixels), zoom, dy, dx)
            aligned = _verdict(gen.floats, np.asarray(warped, np.float32) / 255.0,
                               _covered((w, h), zoom, dy, dx), rule, (round(dy), round(dx), zoom))
            order = {"whole": 2, "portion": 1, "none": 0}
            if (order[aligned.kind], aligned.detail_share) > (order[j.kind], j.detail_share):
                j = aligned
    if (h, w) != (h0, w0):
        j.offset = (round(j.offset[0] * h0 / h), round(j.offset[1] * w0 / w), j.offset[2])
    return j


def _verdict(g: np.ndarray, t: np.ndarray, valid, rule: CopyRule, offset) -> Judgement:
    s = block_stats(g, t, valid)
    detailed = (s["detail"] >= rule.detail) & (s["valid"] >= 0.9)
    copied = detailed & (s["rms"] < rule.block_rms) & (s["rms"] <= rule.block_contrast * s["detail"]) \
        & (s["ncc"] >= np.maximum(rule.block_ncc * s["expected"], rule.ncc_floor))
    blocks = int(copied.sum())
    share = blocks / max(detailed.sum(), 1)                # of the training image's expressive area
    area = copied.sum() / copied.size                      # of the generation's area
    tiled = _tiled(s, rule.grid)
    # the copied region, for the share a sentence states: the copied blocks grown through the flat blocks that agree
    # near-exactly and touch them (a copied sky is copied too, but no flat block proves anything alone)
    inside = s["valid"] >= 0.9
    region = ndimage.binary_propagation(copied, mask=copied | (inside & ~detailed & (s["rms"] < rule.block_rms)))
    up = lambda a: np.repeat(np.repeat(a, MASK // a.shape[0], 0), MASK // a.shape[1], 1)  # noqa: E731  stored at MASK
    if share < rule.min_share or area < rule.min_area or blocks < MIN_BLOCKS:  # a copy is substantial
        kind = "none"
    elif tiled < rule.threshold and share >= rule.whole_agree and (valid is None or valid.mean() >= 0.75):
        kind = "whole"
    else:
        kind = "portion"
    return Judgement(kind, float(region.sum() / max(inside.sum(), 1)), up(copied), float(detailed.mean()), tiled,
                     offset, float(region.sum() / region.size), detail_share=float(share), region=up(region))


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


REGION = 64    # a published template's region is kept at this long side (4 px at the judged 256: finer than a block)


def region_to_text(region: np.ndarray) -> str:
    """A bool region (white: compared) at the template image's own aspect → ``HxW:hex``, long side ``REGION``:
    small enough for a column of the index's table, fine enough for the verdict's blocks."""
    h, w = region.shape
    size = _side(h, w, REGION)
    small = np.asarray(Image.fromarray(np.asarray(region, np.uint8) * 255).resize(size, Image.BOX)) >= 128
    return f"{small.shape[0]}x{small.shape[1]}:" + np.packbits(small.reshape(-1)).tobytes().hex()


def region_from_text(text: str, size: tuple[int, int]) -> np.ndarray:
    """The region fitted to ``size=(H, W)`` as the training image is (centre crop to the aspect, then
    resize: ``distance.fit``), so its pixels lie on the template's."""
    from imgextract.distance import fit
    shape, bits = text.split(":", 1)
    h, w = (int(v) for v in shape.split("x"))
    small = np.unpackbits(np.frombuffer(bytes.fromhex(bits), np.uint8))[: h * w].reshape(h, w)
    image = fit(Image.fromarray(small * np.uint8(255)), size).convert("L")
    return np.asarray(image) >= 128


def masked_mse(gen: np.ndarray, train: np.ndarray, region: np.ndarray) -> float:
    """Webster's masked MSE, in his units: both images at 256 × 256, pixels in [0, 1], squared differences
    over RGB summed on the region and divided by the region's share of the image (his threshold: 2,500)."""
    def at256(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((256, 256), Image.BILINEAR), np.float32) / 255.0
    m = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).resize((256, 256), Image.NEAREST)) >= 128
    if not m.any():
        return float("nan")
    d = at256(gen) - at256(train)
    return float((d[m] ** 2).sum() / m.mean())


def judge_masked(gen: Prepared, train: Prepared, region: np.ndarray, rule: CopyRule = CopyRule()) -> Judgement:
    """The verdict on a published template: the blocks of its fixed ``region`` (bool, at the judged size)
    only, as registered by :func:`judge`. A ``template`` when the copied blocks cover ``whole_agree`` of the
    region's detailed blocks (Webster asks the whole fixed region to agree) and the copy is substantial
    in the generation; ``none`` otherwise."""
    h, w = gen.pixels.shape[:2]
    tries = [(gen.floats, train.floats, region, (0, 0, 1.0))]
    if rule.align:
        dy, dx, zoom = register(gen, train)
        if not (abs(dy) < 0.5 and abs(dx) < 0.5 and zoom == 1.0) and abs(dy) <= MAX_SHIFT * h \
                and abs(dx) <= MAX_SHIFT * w:
            moved = _zoomed(Image.fromarray(region.astype(np.uint8) * 255), zoom, dy, dx)
            tries.append((gen.floats, np.asarray(_zoomed(Image.fromarray(train.pixels), zoom, dy, dx), np.float32)
                          / 255.0, (np.asarray(moved) >= 128) & _covered((w, h), zoom, dy, dx),
                          (round(dy), round(dx), zoom)))
    best = None
    for g, t, valid, offset in tries:
        j = _verdict(g, t, valid, rule, offset)
        j.kind = "template" if j.kind != "none" and j.detail_share >= rule.whole_agree else "none"
        if best is None or (j.kind != "none", j.detail_share) > (best.kind != "none", best.detail_share):
            best = j
    best.masked = True
    if (h, w) != gen.size:
        best.offset = (round(best.offset[0] * gen.size[0] / h), round(best.offset[1] * gen.size[1] / w), best.offset[2])
    return best


SCREEN_ZOOMS = tuple(round(0.9 + 0.025 * i, 3) for i in range(10))   # 0.90–1.125 on thumbnails (< 1 block at the edges)
SCREEN_TRIES = 2                # alignments tried per candidate besides none: the strongest zooms' peaks
SCREEN_SLACK = (0.5, 0.8)       # the screen asks 0.5 × min_area, 0.8 × min_share: windows are coarser than blocks
SCREEN_WINDOW = 4               # thumbnail blocks a side per window (64 px at 512 px)


def screen_scores(gen_blocks: np.ndarray, thumbs: np.ndarray, rule: CopyRule = CopyRule()) -> np.ndarray:
    """Per candidate (area, share): the verdict's own tests (near-exact, detailed, correlated) on
    thumbnail windows at the pair's best alignment, no decode. ``area``: agreeing windows / all
    windows; ``share``: / the training side's detailed windows (the best alignment's values).

    ``gen_blocks``: the generation's block means (by, bx, 3); ``thumbs``: (m, by, bx, 3), the
    candidates' block means fitted to the generation's size (``distance.block_means``). Alignments
    tried: none, and per candidate the ``SCREEN_TRIES`` zooms of ``SCREEN_ZOOMS`` with the strongest
    phase-correlation peak within ``MAX_SHIFT`` (plus a block). A window agrees when its RMS is under
    1.5 × ``block_rms``, the training side has detail and the grey means correlate at least 0.6. A
    measured screen, not a bound: bench_verdict.py counts the copies it would have dropped.
    """
    g = gen_blocks.astype(np.float32)
    t = np.moveaxis(thumbs.astype(np.float32), -1, 1)                  # (m, 3, by, bx)
    m, _, by, bx = t.shape
    win = SCREEN_WINDOW
    if m == 0 or by < 2 * win or bx < 2 * win:
        return np.ones((m, 2))                                         # too small to screen: judge them all
    zoomed = np.stack([t if z == 1.0 else _zoom_matrix(by, z) @ t @ _zoom_matrix(bx, z).T for z in SCREEN_ZOOMS])
    greys = zoomed[:, :, 0] * 0.299 + zoomed[:, :, 1] * 0.587 + zoomed[:, :, 2] * 0.114   # (z, m, by, bx)
    gg = grey(g)
    cross = _spectrum(gg).conj() * sfft.rfft2(greys - greys.mean(axis=(-2, -1), keepdims=True))
    r = sfft.irfft2(cross / np.maximum(np.abs(cross), 1e-9), s=(by, bx))
    sy = np.fft.fftfreq(by, 1 / by).astype(int)                       # peak index → shift
    sx = np.fft.fftfreq(bx, 1 / bx).astype(int)
    reach = (np.abs(sy)[:, None] <= MAX_SHIFT * by + 1) & (np.abs(sx)[None, :] <= MAX_SHIFT * bx + 1)
    r = np.where(reach, r, -np.inf).reshape(len(SCREEN_ZOOMS), m, -1)
    where = r.argmax(axis=-1)                                          # (z, m): each zoom's peak
    peaks = np.take_along_axis(r, where[..., None], axis=-1)[..., 0]
    best = np.argsort(peaks, axis=0)[-SCREEN_TRIES:]                   # the strongest zooms' peaks
    pos = np.take_along_axis(where, best, axis=0)
    zt = np.concatenate([np.full(m, SCREEN_ZOOMS.index(1.0)), best.reshape(-1)])   # tries: none, then the peaks
    it = np.concatenate([np.arange(m), np.tile(np.arange(m), len(best))])
    dy = np.concatenate([np.zeros(m, int), -sy[pos.reshape(-1) // bx]])
    dx = np.concatenate([np.zeros(m, int), -sx[pos.reshape(-1) % bx]])
    yy, xx = np.arange(by)[None] - dy[:, None], np.arange(bx)[None] - dx[:, None]   # gen (y, x) ~ thumb (y-dy, x-dx)
    valid = ((yy >= 0) & (yy < by))[:, :, None] & ((xx >= 0) & (xx < bx))[:, None, :]
    blocks = np.moveaxis(zoomed, 2, -1)                                # (z, m, by, bx, 3)
    b = blocks[zt[:, None, None], it[:, None, None], np.clip(yy, 0, by - 1)[:, :, None],
               np.clip(xx, 0, bx - 1)[:, None, :]]                     # (tries, by, bx, 3)
    hy, wx = by // win, bx // win
    cut = (slice(None), slice(0, hy * win), slice(0, wx * win))
    a = g[cut[1:]].reshape(1, hy, win, wx, win, 3)
    b = b[cut].reshape(-1, hy, win, wx, win, 3)
    whole = valid[cut].reshape(-1, hy, win, wx, win).all(axis=(2, 4))
    rms = np.sqrt(((a - b) ** 2).mean(axis=(2, 4, 5)))
    ag, bg = grey(a), grey(b)
    ag = ag - ag.mean(axis=(2, 4), keepdims=True)
    bg = bg - bg.mean(axis=(2, 4), keepdims=True)
    va, vb = (ag ** 2).mean(axis=(2, 4)), (bg ** 2).mean(axis=(2, 4))
    ncc = (ag * bg).mean(axis=(2, 4)) / np.sqrt(np.maximum(va * vb, 1e-12))
    ok = whole & (rms < 1.5 * rule.block_rms) & (np.sqrt(vb) >= 0.66 * rule.detail) & (ncc >= 0.6)
    detailed = whole & (np.sqrt(vb) >= 0.66 * rule.detail)
    area = ok.sum(axis=(1, 2)) / (hy * wx)                             # of the generation
    share = ok.sum(axis=(1, 2)) / np.maximum(detailed.sum(axis=(1, 2)), 1)   # of the training image's detail
    scores = np.zeros((m, 2))
    np.maximum.at(scores, it, np.stack([area, share], axis=-1))
    return scores


def screen(gen_blocks: np.ndarray, thumbs: np.ndarray, rule: CopyRule = CopyRule()) -> np.ndarray:
    """Which candidates could hold a substantial copy: windows that agree cover 0.5 × ``min_area`` of
    the generation and 0.8 × ``min_share`` of the training image's detail (``SCREEN_SLACK``: the
    verdict asks the full values of its finer blocks; the slack is the margin measured by
    bench_verdict.py)."""
    s = screen_scores(gen_blocks, thumbs, rule)
    return (s[:, 0] >= SCREEN_SLACK[0] * rule.min_area) & (s[:, 1] >= SCREEN_SLACK[1] * rule.min_share)
