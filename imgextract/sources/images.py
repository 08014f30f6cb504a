"""Opening images: the one place every image is decoded, so every stage treats odd files alike.

Unreadable images are never fatal here: callers get a :class:`BadImage` with the reason, and
list the file as skipped.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgextract.sources import locators


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb limit
FAST_PNG_BYTES = 64 << 20   # PNG files up to this size are read whole for the fast decoder; larger ones Pillow streams


def open_rgb(path: Path, data: bytes | None = None, min_side: int = 1) -> Image.Image:
    """Open an image fully as 8-bit RGB, upright, or raise ``BadImage`` saying why.

    The one place every image is opened, so every stage treats odd files alike: EXIF
    orientation applied, 16-bit grey scaled (not clipped), alpha flattened on white, the
    first frame of an animation, bomb-sized images refused before a byte is decoded, and
    images smaller than ``min_side`` (a tile grid that cannot fit) refused.
    ``data``: the file's bytes when the caller already read them (to hash them).
    ``path`` may be a locator (``SHARD.tar::OFFSET+SIZE``, see :mod:`imgextract.sources.locators`).
    """
    if data is None and locators.is_locator(path):
        try:
            data = locators.read_bytes(path)
        except OSError as exc:
            raise BadImage(path, _reason(exc)) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if data is None and _FAST_PNG is not None and Path(path).suffix.lower() == ".png" \
                    and Path(path).stat().st_size <= FAST_PNG_BYTES:
                data = Path(path).read_bytes()   # read once: the header below, then the fast decoder
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(path, f"{im.width * im.height:,} pixels ({im.width}x{im.height}) is over the {MAX_PIXELS:,}-pixel safety "
                                         "limit (decompression bomb); downscale it first")
                if min(im.size) < min_side:
                    raise BadImage(path, f"{im.width}x{im.height} pixels is too small for a "
                                         f"{min_side}x{min_side} tile grid")
                fast = _fast_png(im, data)
                if fast is not None:
                    return fast
                im.load()
                if im.getexif().get(ORIENTATION, 1) != 1:   # most files need no turn: no copy for them
                    im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses > 2x the limit at open, before we can look
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "its size"
        raise BadImage(path, f"{size} is over the {MAX_PIXELS:,}-pixel safety limit (decompression bomb); "
                             "downscale it first") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as exc:
        raise BadImage(path, _reason(exc)) from exc


try:   # libspng: a plain PNG's pixels with less work than Pillow's (decoding is a scan's largest cost; with the
       # replication test's toning table, 38.6 -> 36.3 ms per generation on bench_scan's k5, docs/performance.md)
    import pyspng as _FAST_PNG
except ImportError:  # pragma: no cover - an optional speed-up; Pillow decodes the same pixels
    _FAST_PNG = None


def _fast_png(im: Image.Image, data: bytes | None) -> Image.Image | None:
    """The pixels of a plain PNG (8-bit RGB, no transparency, no EXIF chunk: nothing :func:`_to_rgb` or the
    orientation would change) decoded by libspng, bit for bit Pillow's; None for every other file."""
    if (_FAST_PNG is None or data is None or im.format != "PNG" or im.mode != "RGB" or "transparency" in im.info
            or data[24:26] != b"\x08\x02" or b"eXIf" in data):
        return None
    try:
        arr = _FAST_PNG.load(data, "RGB")
    except Exception:   # noqa: BLE001 - whatever libspng refuses, Pillow decodes or explains
        return None
    if arr.shape != (im.height, im.width, 3) or arr.dtype != np.uint8:
        return None
    return Image.fromarray(arr, "RGB")


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (unknown format, empty or corrupt file)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit grey: scale to 8 bits instead of clipping
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and arr.max(initial=0) <= 1.0 else (255.0 if arr.max(initial=0) <= 255 else 65535.0)
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "P", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


ORIENTATION = 0x0112   # the EXIF tag exif_transpose reads
FOLLOW_LINKS = "IMGEXTRACT_FOLLOW_LINKS"


def list_image_files(folder: Path) -> tuple[list[Path], list[dict]]:
    """Image files under ``folder`` (recursive, sorted, resolved) and the entries that cannot be
    images: broken links and symlink loops are listed with a reason, never silently dropped.

    A link that leads out of ``folder`` is listed, not followed (its target would be read, tested and
    shown in a report that is shared), unless ``IMGEXTRACT_FOLLOW_LINKS=1``."""
    import os
    root = Path(folder).resolve()
    follow = os.environ.get(FOLLOW_LINKS, "") == "1"
    files, skipped = [], []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.is_file():
            real = p.resolve()
            if follow or real == root or root in real.parents:
                files.append(real)
            else:
                skipped.append({"path": str(p.absolute()),
                                "reason": f"a link out of the folder (not followed; {FOLLOW_LINKS}=1 follows it)"})
        elif p.is_symlink():
            skipped.append({"path": str(p.absolute()), "reason": "symlink loop or broken link"})
    return files, skipped


def inside(root: Path, ref: str) -> Path | None:
    """``ref`` (a path from metadata) resolved under ``root``, or None when it would leave it
    (absolute, ``../``, or a link out): metadata from strangers never names files elsewhere."""
    base = Path(root).resolve()
    try:
        real = (base / str(ref)).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return real if real != base and base in real.parents else None


class BadImage(Exception):
    """An image inside a batch that cannot be read: listed and skipped, never fatal."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
