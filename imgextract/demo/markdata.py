"""Labelled watermark data from real photographs: what the watermark tests and benchmark check.

Positives carry a stock-photo wordmark drawn the ways such marks appear: a single mark at a
random place, size, rotation and opacity (0.3–0.8), a diagonal repeated pattern, or a bottom
credit bar. Marks are semi-transparent text with a thin contrasting outline, as stock sites draw
them so they stay visible on any background. Negatives are clean photographs or carry ordinary, non-brand text.
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
           xy: tuple[int, int], limit: tuple[int, int]) -> None:
    w, h = base.size
    shape = _text_patch(text, font_path, size, angle, limit, 1.0)
    x = int(np.clip(xy[0], 0, max(0, w - shape.width)))
    y = int(np.clip(xy[1], 0, max(0, h - shape.height)))
    colour = _contrasting(base, (x, y, x + shape.width, y + shape.height))
    patch = _text_patch(text, font_path, size, angle, limit, opacity, colour)
    base.alpha_composite(patch, (x, y))


def draw_mark(image: Image.Image, text: str, style: str, rng: np.random.Generator,
              fonts: list[Path] | None = None, opacity: float | None = None) -> Image.Image:
    """The image with ``text`` drawn as a single mark, a diagonal pattern, or a credit bar."""
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


def labelled_set(n_positive: int = 60, n_negative: int = 60, size: int = 512, seed: int = 0) -> list[Example]:
    """Half the negatives clean, half with ordinary text; positives spread over brands and styles."""
    rng = np.random.default_rng(seed)
    fonts = font_files()
    out = []
    brands = list(DEFAULT_BRANDS)
    styles = ["single", "diagonal", "credit"]
    for i in range(n_positive):
        brand = brands[i % len(brands)]
        style = styles[(i // len(brands)) % len(styles)]
        text = DEFAULT_BRANDS[brand][0] if style != "credit" else f"Photo: {DEFAULT_BRANDS[brand][0]}"
        img = draw_mark(photo(PHOTOS[rng.integers(len(PHOTOS))], size, rng), text, style, rng, fonts)
        out.append(Example(img, True, brand, f"{style} {text}"))
    for i in range(n_negative):
        img = photo(PHOTOS[rng.integers(len(PHOTOS))], size, rng)
        if i % 2:
            text = PLAIN_TEXTS[rng.integers(len(PLAIN_TEXTS))]
            img = draw_mark(img, text, ["single", "credit"][i // 2 % 2], rng, fonts)
            out.append(Example(img, False, None, f"plain text {text}"))
        else:
            out.append(Example(img, False, None, "clean"))
    return out
