"""Labelled watermark data from real photographs: what the watermark tests and benchmark check.

Positives carry a stock-photo wordmark drawn the ways such marks appear: a single mark at a
random place, size, rotation and opacity (0.3–0.8), a diagonal repeated pattern, or a bottom
credit bar. Marks are semi-transparent text with a thin contrasting outline, as stock sites draw
them so they stay visible on any background. Negatives are clean photographs or carry ordinary, non-brand text.

The hard styles are what a generation's reproduced mark looks like and the own styles do not
draw: ``faint`` (opacity 0.25–0.4, no outline: below that, on a textured photograph, a person
cannot read the mark either), ``cut`` (the mark runs off the frame, 15–35% of
it lost), ``garbled`` (one or two letters wrong, then blurred and JPEG-compressed as a sample
is), ``corner`` (a small credit, 2.5–4% of the width, in a corner) and ``band`` (a translucent
band across the middle with the name in it). Hard negatives carry text that shares letters with a
brand ("In Stock", "Sweet Dreams", "Image Gallery").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imgextract.demo.photos import photo as full_photo
from imgextract.stages.watermarks import DEFAULT_BRANDS

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
PLAIN_TEXTS = ["Happy Birthday", "SALE 50% OFF", "Welcome Home", "Chapter Three", "Fresh Coffee",
               "Summer Holiday", "Open Daily", "Mountain View", "Best Friends", "City Lights", "Grand Opening",
               "Thank You"]
NEAR_BRAND_TEXTS = ["In Stock", "Sweet Dreams", "Image Gallery", "Stock Market", "Dream Team", "Deposit Here",
                    "Alameda Street", "Getting Ready", "Shutter Speed", "Photo Studio", "Stockholm 1998",
                    "Daydream"]
OWN_STYLES = ["single", "diagonal", "credit"]
HARD_STYLES = ["faint", "cut", "garbled", "corner", "band"]
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "retina", "camera", "coins", "immunohistochemistry",
          "hubble_deep_field", "china", "flower"]


def font_files() -> list[Path]:
    """TrueType fonts the system provides (sans, serif, bold, condensed...)."""
    found = []
    for d in FONT_DIRS:
        p = Path(d)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*.ttf") if "Mono" not in f.name)
    return found


def _font(path: Path | None, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default(size=size)


def photo(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A random square crop of a photograph, resized to ``size``."""
    im = full_photo(name)
    s = int(min(im.size) * rng.uniform(0.6, 1.0))
    x, y = rng.integers(0, im.width - s + 1), rng.integers(0, im.height - s + 1)
    return im.crop((x, y, x + s, y + s)).resize((size, size), Image.LANCZOS)


def _text_patch(text: str, font_path: Path | None, size: int, angle: float, limit: tuple[int, int],
                opacity: float, colour=(255, 255, 255)) -> Image.Image:
    """The rotated text on a transparent patch, shrunk until it fits inside ``limit`` (w, h)."""
    while True:
        font = _font(font_path, size)
        probe = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        tw, th = probe[2] - probe[0] + 8, probe[3] - probe[1] + 8
        patch = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
        outline = tuple(255 - c for c in colour)  # stock marks keep a thin contrasting edge on any background
        ImageDraw.Draw(patch).text((4 - probe[0], 4 - probe[1]), text, font=font, fill=(*colour, int(255 * opacity)),
                                   stroke_width=max(1, size // 30), stroke_fill=(*outline, int(255 * opacity * 0.6)))
        patch = patch.rotate(angle, expand=True, resample=Image.BICUBIC)
        if (patch.width <= limit[0] and patch.height <= limit[1]) or size <= 10:
            return patch
        size = int(size * 0.85)


def _contrasting(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """White on dark regions, near-black on bright ones: a mark meant to be seen."""
    lum = float(np.asarray(image.convert("L").crop(box), dtype=np.float32).mean())
    return (255, 255, 255) if lum < 150 else (20, 20, 20)


def _place(base: Image.Image, text: str, font_path: Path | None, size: int, angle: float, opacity: float,
           xy: tuple[int, int], limit: tuple[int, int], inside: bool = True, outline: bool = True) -> None:
    """Composite the mark at ``xy``; ``inside`` False lets it run off the frame (a cut mark)."""
    w, h = base.size
    shape = _text_patch(text, font_path, size, angle, limit, 1.0)
    x, y = xy
    if inside:
        x = int(np.clip(x, 0, max(0, w - shape.width)))
        y = int(np.clip(y, 0, max(0, h - shape.height)))
    seen = (max(0, x), max(0, y), min(w, x + shape.width), min(h, y + shape.height))
    colour = _contrasting(base, seen)
    patch = _text_patch(text, font_path, size, angle, limit, opacity, colour)
    if not outline:
        patch = _text_patch_plain(text, font_path, patch.size, size, angle, opacity, colour)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(patch, (x, y))  # paste clips what falls outside; alpha_composite would refuse it
    base.alpha_composite(layer)


def _text_patch_plain(text: str, font_path: Path | None, shape: tuple[int, int], size: int, angle: float,
                      opacity: float, colour) -> Image.Image:
    """The mark without its outline (faint marks a model half-learned have none), at the fitted size."""
    while True:
        font = _font(font_path, size)
        probe = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
        patch = Image.new("RGBA", (probe[2] - probe[0] + 8, probe[3] - probe[1] + 8), (0, 0, 0, 0))
        ImageDraw.Draw(patch).text((4 - probe[0], 4 - probe[1]), text, font=font, fill=(*colour, int(255 * opacity)))
        patch = patch.rotate(angle, expand=True, resample=Image.BICUBIC)
        if (patch.width <= shape[0] and patch.height <= shape[1]) or size <= 10:
            return patch
        size = int(size * 0.9)


def garble(text: str, rng: np.random.Generator, letters: int) -> str:
    """``letters`` letters of ``text`` replaced by look-alikes or neighbours, as a model redraws a mark."""
    swaps = {"e": "c", "a": "o", "g": "q", "i": "l", "m": "rn", "t": "f", "s": "e", "o": "a", "k": "h", "c": "e",
             "r": "n", "u": "v", "y": "v", "p": "b", "d": "b", "n": "m", "l": "i", "h": "b"}
    chars = list(text)
    spots = [i for i, ch in enumerate(chars) if ch.lower() in swaps]
    for i in rng.choice(spots, size=min(letters, len(spots)), replace=False):
        new = swaps[chars[i].lower()]
        chars[i] = new.upper() if chars[i].isupper() else new
    return "".join(chars)


def as_generated(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A sample's softness: a slight blur and JPEG at quality 40–70."""
    import io
    from PIL import ImageFilter
    soft = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.2))))
    buf = io.BytesIO()
    soft.save(buf, "JPEG", quality=int(rng.integers(40, 71)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def draw_mark(image: Image.Image, text: str, style: str, rng: np.random.Generator,
              fonts: list[Path] | None = None, opacity: float | None = None) -> Image.Image:
    """The image with ``text`` drawn in ``style``: one of OWN_STYLES or HARD_STYLES."""
    fonts = fonts if fonts is not None else font_files()
    font_path = fonts[rng.integers(len(fonts))] if fonts else None
    w, h = image.size
    base = image.convert("RGBA")
    opacity = float(rng.uniform(0.3, 0.8)) if opacity is None else opacity
    if style == "credit":
        bar_h = int(h * rng.uniform(0.07, 0.1))
        draw = ImageDraw.Draw(base)
        draw.rectangle((0, h - bar_h, w, h), fill=(0, 0, 0, 255))
        draw.text((int(w * rng.uniform(0.02, 0.3)), h - bar_h + int(bar_h * 0.15)), text,
                  font=_font(font_path, int(bar_h * 0.6)), fill=(235, 235, 235, 255))
        return base.convert("RGB")
    if style == "diagonal":
        size, angle = int(w * rng.uniform(0.06, 0.09)), float(rng.uniform(20, 40))
        for row in range(3):
            for col in range(2):
                xy = (int(col * w * 0.5 + rng.uniform(0, w * 0.05)), int(row * h * 0.33 + rng.uniform(0, h * 0.05)))
                _place(base, text, font_path, size, angle, opacity, xy, (w // 2, h // 2))
        return base.convert("RGB")
    if style == "faint":
        size, angle = int(w * rng.uniform(0.08, 0.14)), float(rng.uniform(-20, 20))
        xy = (int(rng.uniform(0, w * 0.4)), int(rng.uniform(0, h * 0.7)))
        _place(base, text, font_path, size, angle, float(rng.uniform(0.25, 0.4)), xy, (int(w * 0.95), int(h * 0.95)),
               outline=False)
        return base.convert("RGB")
    if style == "cut":
        size = int(w * rng.uniform(0.09, 0.14))
        shape = _text_patch(text, font_path, size, 0.0, (int(w * 0.95), int(h * 0.95)), 1.0)
        lost = float(rng.uniform(0.15, 0.35))
        right = bool(rng.integers(2))  # off the right edge (the end lost) or the left (the start lost)
        x = int(w - shape.width * (1 - lost)) if right else int(-shape.width * lost)
        y = int(rng.uniform(0, h - shape.height))
        _place(base, text, font_path, size, 0.0, opacity, (x, y), (int(w * 0.95), int(h * 0.95)), inside=False)
        return base.convert("RGB")
    if style == "garbled":
        size, angle = int(w * rng.uniform(0.08, 0.14)), float(rng.uniform(-15, 15))
        xy = (int(rng.uniform(0, w * 0.5)), int(rng.uniform(0, h * 0.7)))
        _place(base, garble(text, rng, int(rng.integers(1, 3))), font_path, size, angle, opacity, xy,
               (int(w * 0.95), int(h * 0.95)))
        return as_generated(base.convert("RGB"), rng)
    if style == "corner":
        size = max(11, int(w * rng.uniform(0.025, 0.04)))
        shape = _text_patch(text, font_path, size, 0.0, (w, h), 1.0)
        x = 6 if rng.integers(2) else w - shape.width - 6
        y = 6 if rng.integers(2) else h - shape.height - 6
        _place(base, text, font_path, size, 0.0, max(opacity, 0.6), (x, y), (w, h))
        return base.convert("RGB")
    if style == "band":
        band_h = int(h * rng.uniform(0.12, 0.18))
        top = int(h * rng.uniform(0.4, 0.6)) - band_h // 2
        shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
        ImageDraw.Draw(shade).rectangle((0, top, w, top + band_h), fill=(0, 0, 0, int(255 * rng.uniform(0.25, 0.45))))
        base.alpha_composite(shade)
        patch = _text_patch(text, font_path, int(band_h * 0.6), 0.0, (int(w * 0.8), band_h), 1.0)
        _place(base, text, font_path, int(band_h * 0.6), 0.0, max(opacity, 0.5),
               ((w - patch.width) // 2, top + (band_h - patch.height) // 2), (int(w * 0.8), band_h))
        return base.convert("RGB")
    size, angle = int(w * rng.uniform(0.07, 0.14)), float(rng.uniform(-30, 30))
    xy = (int(rng.uniform(0, w * 0.5)), int(rng.uniform(0, h * 0.7)))
    _place(base, text, font_path, size, angle, opacity, xy, (int(w * 0.95), int(h * 0.95)))
    return base.convert("RGB")


@dataclass
class Example:
    image: Image.Image
    watermark: bool
    brand: str | None
    description: str


def labelled_set(n_positive: int = 60, n_negative: int = 60, size: int = 512, seed: int = 0,
                 styles: list[str] | None = None) -> list[Example]:
    """Positives spread over brands and ``styles`` (OWN_STYLES by default). Negatives: half clean,
    half with ordinary text, and with hard styles in play a third of the texts share letters with a brand."""
    rng = np.random.default_rng(seed)
    fonts = font_files()
    out = []
    brands = list(DEFAULT_BRANDS)
    styles = list(styles or OWN_STYLES)
    hard = any(s in HARD_STYLES for s in styles)
    for i in range(n_positive):
        brand = brands[i % len(brands)]
        style = styles[(i // len(brands)) % len(styles)]
        name = DEFAULT_BRANDS[brand][0]
        text = f"Photo: {name}" if style == "credit" else f"© {name}" if style == "corner" else name
        img = draw_mark(photo(PHOTOS[rng.integers(len(PHOTOS))], size, rng), text, style, rng, fonts)
        out.append(Example(img, True, brand, f"{style} {text}"))
    for i in range(n_negative):
        img = photo(PHOTOS[rng.integers(len(PHOTOS))], size, rng)
        if i % 2:
            texts = NEAR_BRAND_TEXTS if hard and i % 3 == 1 else PLAIN_TEXTS
            text = texts[rng.integers(len(texts))]
            text_styles = ["single", "credit"] + (["cut", "garbled", "corner", "band"] if hard else [])
            img = draw_mark(img, text, text_styles[i // 2 % len(text_styles)], rng, fonts)
            out.append(Example(img, False, None, f"plain text {text}"))
        else:
            out.append(Example(img, False, None, "clean"))
    return out
