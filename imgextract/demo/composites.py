"""Held-out copies and non-copies made from the offline photographs: what calibrates the verdict.

Every kind of copy the verdict must see, and every look-alike it must not accuse, built from real
photographs with a seeded generator: distorted whole copies (JPEG, noise, resize, blur, tone),
small crops resized back (every pixel shifts), portions (part of a training image, the rest new),
templates (a layout shared by several training images, new content in a window), and negatives:
distinct photographs, two unrelated halves, a 6% block, another object on the same flat canvas,
low-contrast textures.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from imgextract.demo.photos import photo

# one name per distinct photograph (skimage's `cat` is `chelsea`; synthetic images left out)
SOURCES = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
           "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page",
           "retina", "rocket", "text", "china", "flower", "ascent", "aero")
TEXTURES = ("brick", "grass", "gravel", "moon", "microaneurysms", "cell")   # low contrast: the look-alikes


def square(image: Image.Image, size: int, box: tuple[float, float, float] = (0.5, 0.5, 1.0)) -> Image.Image:
    """A square crop (centre x, centre y, side as a share of the short side) resized to ``size``."""
    s = min(image.size) * box[2]
    cx, cy = box[0] * image.width, box[1] * image.height
    x0 = min(max(cx - s / 2, 0), image.width - s)
    y0 = min(max(cy - s / 2, 0), image.height - s)
    return image.crop((round(x0), round(y0), round(x0 + s), round(y0 + s))).resize((size, size), Image.LANCZOS)


def crops(name: str, size: int, count: int, rng: np.random.Generator) -> list[Image.Image]:
    """``count`` distinct views of one photograph: the whole, then random crops of 35–90% of its side."""
    im = photo(name)
    out = [square(im, size)]
    while len(out) < count:
        out.append(square(im, size, (rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.35, 0.9))))
    return out


# -- distortions of a whole copy ------------------------------------------------------------------------------

def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def noise(im: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, np.float32) + rng.normal(0, sigma, (im.height, im.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def resized(im: Image.Image, factor: float) -> Image.Image:
    small = im.resize((max(8, round(im.width * factor)), max(8, round(im.height * factor))), Image.BICUBIC)
    return small.resize(im.size, Image.BICUBIC)


def blur(im: Image.Image, radius: float) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius))


def tone(im: Image.Image, gain: float, bias: float) -> Image.Image:
    a = np.asarray(im, np.float32) * gain + bias
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def distorted(im: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One of today's distortions, at a strength a near-exact copy survives."""
    kind = ["jpeg", "noise", "resize", "blur", "tone"][int(rng.integers(5))]
    if kind == "jpeg":
        q = int(rng.integers(50, 91))
        return jpeg(im, q), f"jpeg q{q}"
    if kind == "noise":
        s = float(rng.uniform(2, 8))
        return noise(im, s, rng), f"noise {s:.1f}"
    if kind == "resize":
        f = float(rng.uniform(0.5, 0.9))
        return resized(im, f), f"resize {f:.2f}"
    if kind == "blur":
        r = float(rng.uniform(0.4, 1.0))
        return blur(im, r), f"blur {r:.2f}"
    g, b = float(rng.uniform(0.92, 1.08)), float(rng.uniform(-8, 8))
    return tone(im, g, b), f"tone x{g:.2f}{b:+.0f}"


def small_crop(im: Image.Image, share: float, rng: np.random.Generator) -> Image.Image:
    """Cut ``share`` (2–10%) of the width and height, split unevenly between the sides, then resize back."""
    w, h = im.size
    left, top = rng.uniform(0, 1) * share * w, rng.uniform(0, 1) * share * h
    box = (left, top, left + (1 - share) * w, top + (1 - share) * h)
    return im.resize(im.size, Image.BICUBIC, box=box)


# -- portions and templates -----------------------------------------------------------------------------------

def portion(train: Image.Image, other: Image.Image, share: float, rng: np.random.Generator) -> Image.Image:
    """``share`` of the training image (a band from one side), the rest from another photograph."""
    w, h = train.size
    out = other.copy()
    side = int(rng.integers(4))
    if side in (0, 1):
        cut = round(w * share)
        box = (0, 0, cut, h) if side == 0 else (w - cut, 0, w, h)
    else:
        cut = round(h * share)
        box = (0, 0, w, cut) if side == 2 else (0, h - cut, w, h)
    out.paste(train.crop(box), box[:2])
    return out


WINDOW = (0.25, 0.25, 0.75, 0.75)   # the region a template's members vary in (a quarter of the area)


def templated(background: Image.Image, content: Image.Image, window: tuple = WINDOW) -> Image.Image:
    """The background with ``content`` in the window: one member of a template family."""
    w, h = background.size
    box = (round(window[0] * w), round(window[1] * h), round(window[2] * w), round(window[3] * h))
    out = background.copy()
    out.paste(content.resize((box[2] - box[0], box[3] - box[1]), Image.LANCZOS), box[:2])
    return out


def block_in(host: Image.Image, train: Image.Image, side: float, rng: np.random.Generator) -> Image.Image:
    """A square block of the training image (``side`` of its width) pasted into an unrelated image."""
    w, h = host.size
    s = round(side * w)
    x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    out = host.copy()
    out.paste(train.crop((x, y, x + s, y + s)), (x, y))
    return out


def on_canvas(obj: Image.Image, size: int, colour=(236, 236, 230), scale: float = 0.3) -> Image.Image:
    """An object (a photograph, small) in the middle of a flat canvas."""
    canvas = Image.new("RGB", (size, size), colour)
    s = round(size * scale)
    canvas.paste(obj.resize((s, s), Image.LANCZOS), ((size - s) // 2, (size - s) // 2))
    return canvas


def smoothed(im: Image.Image) -> list[tuple[str, Image.Image]]:
    """What an undertrained small model draws: the view blurred (1/40, 1/20 and 1/10 of its side) and
    blurred then half washed toward a flat blue (the 'bluish blurs' a 32-px toy drew under held-out
    captions). Judged against distinct photographs, these are the small, flat non-copies."""
    side = min(im.size)
    out = [(f"blur {f}", blur(im, side * f)) for f in (0.025, 0.05, 0.1)]
    a = np.asarray(blur(im, side * 0.05), np.float32)
    out.append(("washed", Image.fromarray(np.clip(0.5 * a + 0.5 * np.array([60, 90, 140]), 0, 255).astype(np.uint8))))
    return out
