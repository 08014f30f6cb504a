"""What every imgextract page shares: one stylesheet, one script, thumbnails, nothing fetched.

Every value that reaches HTML passes through :func:`esc` (``html.escape`` of its text, whatever
its type); images are inline ``data:`` URIs for small pages and JPEG files beside large ones.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from functools import lru_cache
from pathlib import Path

import pandas as pd
from PIL import Image

from imgextract import rundir
from imgextract.sources.images import BadImage, open_rgb


THUMB = 256

FILES = "report_files"

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:.2em} .muted{color:#666} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.9em;vertical-align:top}
th{background:#f4f4f4} table.sortable th{cursor:pointer} table.sortable th:after{content:" \2195";color:#aaa}
.stats{display:flex;gap:1.5em;margin:1em 0;flex-wrap:wrap}.stat{background:#f4f4f4;padding:.8em 1.2em;border-radius:6px}
.stat b{display:block;font-size:1.6em}
.summary{border:2px solid #333;border-radius:8px;padding:1em 1.4em;margin:1em 0;background:#fafafa}
.summary dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.5em 0}.summary dt{color:#555}
.summary pre{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.6em;font-size:.85em}
.finding,.entry{border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}.finding{display:flex;gap:1.2em}
.finding.hit,.entry{border-color:#c0392b}.term{color:#c0392b}.finding>div{min-width:0;overflow-wrap:anywhere}
.terms .term{display:inline-block;border:1px solid #c0392b;border-radius:1em;padding:.1em .7em;margin:0 .4em .3em 0}
.pair{display:flex;gap:.8em;flex-wrap:wrap;align-items:flex-start}.strip{display:flex;gap:.4em;flex-wrap:wrap}
.pair figure,.strip figure{margin:0;text-align:center}.pair figure{width:256px}
.pair img{width:256px;height:256px;object-fit:contain;border:1px solid #aaa}
.strip img{width:96px;height:96px;object-fit:contain;border:1px solid #aaa}
img{image-rendering:pixelated;background:#eee}
figcaption{font-size:.8em;color:#555}code{background:#f4f4f4;padding:.1em .3em;word-break:break-all;font-size:.8em}
.meta td{border:none;padding:.1em .5em}.other{color:#8a5a00}
input.filter{padding:.3em;width:20em;margin:.3em 0}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent, nx = parseFloat(x), ny = parseFloat(y);
        return dir * (!isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y));
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
document.querySelectorAll('input.filter').forEach(function (input) {
  var table = document.getElementById(input.dataset.table);
  input.addEventListener('input', function () {
    var q = input.value.toLowerCase();
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
    });
  });
});
"""


def page(title: str, body: list[str]) -> str:
    """Every imgextract page (report, check, compare): one stylesheet, one script, nothing fetched."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>" + "\n".join(body)
            + f"<script>{SORT_JS}</script></body></html>")


def _image_bytes(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _load_thumb(path: str, box: tuple[int, ...] | None, side: int) -> Image.Image | None:
    try:
        image = open_rgb(Path(path))
    except BadImage:
        return None
    if box is not None:
        from PIL import ImageDraw
        ImageDraw.Draw(image).rectangle(list(box), outline=(230, 20, 20), width=max(1, image.width // 128))
    image.thumbnail((side, side), Image.LANCZOS)
    return image


class Thumbs:
    """Thumbnails for one page: inline data: URIs for small pages, small JPEG files beside
    large ones (``report_files/``, lazy-loaded), so 10^4 findings stay a page a browser opens."""

    def __init__(self, out: Path | None = None, inline: bool = True):
        self.out, self.inline = out, inline
        self._done: dict = {}

    def uri(self, path: str, box=None, side: int = THUMB, image: Image.Image | None = None) -> str:
        key = (str(path), tuple(int(v) for v in box) if box is not None and len(box) == 4 else None, side,
               id(image) if image is not None else None)
        if key in self._done:
            return self._done[key]
        im = image if image is not None else _load_thumb(key[0], key[1], side)
        if im is None:
            uri = ""
        elif self.inline:
            uri = "data:image/png;base64," + base64.b64encode(_image_bytes(im, "PNG")).decode()
        else:
            name = hashlib.sha1(repr(key[:3]).encode() + (b"map" if image is not None else b"")).hexdigest()[:20]
            rundir.write_bytes_atomic(self.out / FILES / f"{name}.jpg", _image_bytes(im, "JPEG"))
            uri = f"{FILES}/{name}.jpg"
        self._done[key] = uri
        return uri

    def img(self, path: str, alt: str, box=None, side: int = THUMB, image: Image.Image | None = None) -> str:
        return f"<img src='{self.uri(path, box, side, image)}' alt='{esc(alt)}' loading='lazy'>"


def thumbnail_uri(path: str, box: list | None = None) -> str:
    """A data: URI of the image, at most THUMB pixels a side, with an optional box drawn in red."""
    return _thumbnail(str(path), tuple(int(v) for v in box) if box is not None and len(box) == 4 else None)


@lru_cache(maxsize=512)
def _thumbnail(path: str, box: tuple[int, ...] | None) -> str:
    """Bounded cache: a long-lived process (check, compare) does not keep every image it showed."""
    im = _load_thumb(path, box, THUMB)
    return "" if im is None else "data:image/png;base64," + base64.b64encode(_image_bytes(im, "PNG")).decode()


def esc(value) -> str:
    """Any value as HTML text: escaped whatever its type; None and NaN as nothing."""
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def figure_uri(fig) -> str:
    """A matplotlib figure as a PNG data: URI (and closed), for self-contained pages."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
