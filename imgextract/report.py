"""The HTML report: one self-contained file, every finding shown side by side.

Images are embedded as base64 PNG thumbnails so the file can be mailed or archived alone.
Every caption, path and command is escaped with ``html.escape``: captions are untrusted.
"""

from __future__ import annotations

import base64
import html
import io
import shlex
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.generate import regenerate_command
from imgextract.sources import BadImage, open_rgb

MAX_FINDINGS = 200
THUMB = 256

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{margin-bottom:.2em} .muted{color:#666} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;font-size:.9em}
.stats{display:flex;gap:1.5em;margin:1em 0}.stat{background:#f4f4f4;padding:.8em 1.2em;border-radius:6px}
.stat b{display:block;font-size:1.6em}.finding{display:flex;gap:1.2em;border:1px solid #ddd;border-radius:6px;
padding:1em;margin:1em 0}.finding.hit{border-color:#c0392b}.pair{display:flex;gap:.6em;flex-wrap:wrap}
.pair figure{margin:0;text-align:center;max-width:200px}.pair img{width:192px;height:auto;image-rendering:pixelated;
border:1px solid #aaa}figcaption{font-size:.8em;color:#555}code{background:#f4f4f4;padding:.1em .3em;
word-break:break-all;font-size:.8em} .meta td{border:none;padding:.1em .5em}
"""


def thumbnail_uri(path: str, box: list | None = None) -> str:
    """A data: URI of the image, at most THUMB pixels a side, with an optional box drawn in red."""
    return _thumbnail(str(path), tuple(int(v) for v in box) if box is not None and len(box) == 4 else None)


@lru_cache(maxsize=512)
def _thumbnail(path: str, box: tuple[int, ...] | None) -> str:
    """Cached: one training image behind many findings is encoded once."""
    try:
        image = open_rgb(Path(path))
    except BadImage:
        return ""
    if box is not None:
        from PIL import ImageDraw
        ImageDraw.Draw(image).rectangle(list(box), outline=(230, 20, 20), width=max(1, image.width // 128))
    image.thumbnail((THUMB, THUMB), Image.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _e(value) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))


def _finding(row: pd.Series, record: dict | None, hit: bool, marks: dict | None = None) -> str:
    cmd = ""
    if record is not None and pd.notna(row.get("seed")):
        cmd = shlex.join(regenerate_command(record, row["caption"], int(row["seed"])))
    meta = [("caption", row.get("caption")), ("training caption", row.get("train_caption")),
            ("tiled L2", f"{row['tiled_l2']:.4f}"), ("L2", f"{row['l2']:.4f}"),
            ("phash / dhash / whash", f"{row['phash_distance']} / {row['dhash_distance']} / {row['whash_distance']}"),
            ("seed", row.get("seed")), ("generation", row["generation_path"]), ("training image", row["train_path"])]
    mark = (marks or {}).get(row["generation_path"])
    box = None
    if mark is not None:
        box = list(mark["box"]) if mark["watermark"] and mark["box"] is not None else None
        meta.append(("watermark", f"{mark['brand'] or 'yes'} at {box}" if mark["watermark"] else "none found"))
    cells = "".join(f"<tr><td class=muted>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta if _e(v))
    regen = f"<p>regenerate: <code>{_e(cmd)}</code></p>" if cmd else ""
    return (f"<div class='finding{' hit' if hit else ''}'><div class=pair>"
            f"<figure><img src='{thumbnail_uri(row['generation_path'], box)}' alt='generation'>"
            f"<figcaption>generation</figcaption></figure>"
            f"<figure><img src='{thumbnail_uri(row['train_path'])}' alt='training image'>"
            f"<figcaption>training image #{_e(row['train_id'])}</figcaption></figure></div>"
            f"<div><table class=meta>{cells}</table>{regen}</div></div>")


def _per_caption_table(summary: dict) -> str:
    rows = summary.get("per_caption") or []
    if not rows:
        return ""
    body = "".join(f"<tr><td>{_e(r['caption_id'])}</td><td>{_e(r['caption'])}</td><td>{r['samples']}</td>"
                   f"<td>{r['memorized_samples']}</td><td>{r['rate']:.2f}</td><td>{r['best_tiled_l2']:.4f}</td></tr>"
                   for r in sorted(rows, key=lambda r: (-r["rate"], r["best_tiled_l2"])))
    return ("<h2>Per caption</h2><table><tr><th>id</th><th>caption</th><th>samples</th><th>memorized</th>"
            f"<th>rate</th><th>best tiled L2</th></tr>{body}</table>")


def render_report(out: Path, title: str = "imgextract report") -> Path:
    """Write ``report.html`` into a run (or scan output) folder that holds matches and a summary."""
    out = Path(out)
    if not (out / rundir.MATCHES).is_file() or not (out / rundir.SUMMARY).is_file():
        raise InputError(f"{out} has no {rundir.MATCHES}/{rundir.SUMMARY}",
                         f"run `imgextract scan` with --out {out} first")
    matches = pq.read_table(out / rundir.MATCHES).to_pandas()
    summary = rundir.read_json(out / rundir.SUMMARY)
    record = rundir.read_json(out / rundir.RUN_JSON) if rundir.is_run_dir(out) else None
    best = matches.sort_values("tiled_l2").drop_duplicates("generation_path")
    hits = best[best["memorized"]]
    marks = None
    if (out / "watermarks.parquet").is_file():
        wm = pq.read_table(out / "watermarks.parquet").to_pandas()
        marks = {r["path"]: r for _, r in wm.iterrows()}
    p = summary["parameters"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"]
    if record:
        parts.append(f"<p class=muted>model <code>{_e(record['model']['id'])}</code> "
                     f"(fingerprint {_e(record['model']['fingerprint'][:16])}), "
                     f"{_e(record['sampling']['samples'])} samples per caption, "
                     f"{_e(record['sampling']['steps'])} steps, guidance {_e(record['sampling']['guidance'])}, "
                     f"safety checker {_e(record.get('safety_checker'))}</p>")
    parts.append(f"<p class=muted>index <code>{_e(p['index_path'])}</code>, embedder {_e(p['embedder'])}, "
                 f"k={_e(p['k'])}, memorized = tiled L2 ({_e(p['grid'])}×{_e(p['grid'])} tiles) "
                 f"&lt; {_e(p['threshold'])}</p>")
    stats = [("generations scanned", summary["generations_scanned"]),
             ("memorized generations", summary["memorized_generations"]),
             ("training images memorized", len(summary["memorized_images"])),
             ("unreadable, skipped", len(summary["skipped"]))]
    parts.append("<div class=stats>" + "".join(f"<div class=stat><b>{v}</b>{_e(k)}</div>" for k, v in stats)
                 + "</div>")
    parts.append(extra_sections(summary))
    parts.append(clique_section(out))
    parts.append(watermark_section(summary, marks))
    parts.append(_per_caption_table(summary))
    if len(hits):
        shown = hits.head(MAX_FINDINGS)
        parts.append(f"<h2>Findings ({len(hits)} memorized generations"
                     f"{f', best {MAX_FINDINGS} shown' if len(hits) > MAX_FINDINGS else ''})</h2>")
        parts.extend(_finding(r, record, True, marks) for _, r in shown.iterrows())
    else:
        parts.append("<h2>No memorized generation found</h2><p>Nearest candidates, for inspection:</p>")
        parts.extend(_finding(r, record, False, marks) for _, r in best.head(10).iterrows())
    if summary["skipped"]:
        items = "".join(f"<li><code>{_e(s['path'])}</code>: {_e(s['reason'])}</li>" for s in summary["skipped"])
        parts.append(f"<h2>Skipped (unreadable)</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    path = out / rundir.REPORT
    rundir.write_bytes_atomic(path, "\n".join(parts).encode("utf-8"))
    return path


def watermark_section(summary: dict, marks: dict | None) -> str:
    """Per-caption watermark rates and whether the caption's training image carried a mark too."""
    w = summary.get("watermarks")
    if not w and not marks:
        return ""
    parts = ["<h2>Watermark artifacts</h2>"]
    if w:
        parts.append(f"<p>{w['watermarked']} of {w['generations_checked']} generations carry a mark; "
                     f"{w['training_images_checked']} training images checked.</p>")
        rows = [r for r in w["per_caption"] if r["watermarked"] or r.get("train_watermarked")]
        body = "".join(f"<tr><td>{_e(r['caption'])}</td><td>{r['watermarked']}/{r['samples']}</td>"
                       f"<td>{_e(', '.join(r['brands']))}</td><td>{_e(r['train_watermarked'])}</td>"
                       f"<td>{_e(r['reproduced'])}</td></tr>" for r in rows)
        if body:
            parts.append("<table><tr><th>caption</th><th>marked samples</th><th>brands</th>"
                         f"<th>training image marked</th><th>reproduced</th></tr>{body}</table>")
    elif marks:
        flagged = [m for m in marks.values() if m["watermark"]]
        body = "".join(f"<tr><td><code>{_e(m['path'])}</code></td><td>{_e(m['brand'])}</td><td>{_e(m['text'])}</td>"
                       f"<td>{_e(list(m['box']) if m['box'] is not None else '')}</td></tr>" for m in flagged[:200])
        parts.append(f"<p>{len(flagged)} of {len(marks)} images carry a mark.</p>")
        if body:
            parts.append(f"<table><tr><th>image</th><th>brand</th><th>text</th><th>box</th></tr>{body}</table>")
    return "".join(parts)


def clique_section(out: Path, max_images: int = 12) -> str:
    """Flagged cliques (training-set-free test), each as a strip of its member images."""
    path = out / "cliques.parquet"
    if not path.is_file():
        return ""
    table = pq.read_table(path).to_pandas()
    flagged = table[table["flagged"]].sort_values("largest_clique", ascending=False)
    first = table.iloc[0] if len(table) else None
    params = (f"delta {first['delta']}, min size {first['min_size']}" if first is not None else "")
    parts = [f"<h2>Cliques among generations ({len(flagged)} of {len(table)} captions flagged; {_e(params)})</h2>"]
    for _, r in flagged.iterrows():
        members = list(r["members"])
        strip = "".join(f"<img src='{thumbnail_uri(p)}' alt='member' style='width:96px'>"
                        for p in members[:max_images])
        bound = "" if r["exact"] else f" — search bound hit, true size at most {int(r['upper_bound'])}"
        parts.append(f"<div class=finding><div><p><b>{_e(r['caption'])}</b>: clique of {int(r['largest_clique'])} "
                     f"of {int(r['n_generations'])} generations, mean tiled L2 {r['mean_distance']:.4f}{_e(bound)}</p>"
                     f"<div class=pair>{strip}</div></div></div>")
    return "".join(parts)


def extra_sections(summary: dict) -> str:
    """Sections that appear only when the summary carries their data."""
    rows = summary.get("duplication") or []
    if not rows:
        return ""
    head = "<tr><th>copies in training set</th><th>images</th><th>memorized images</th><th>image rate</th>" \
           "<th>samples</th><th>memorized samples</th><th>sample rate</th></tr>"
    body = "".join(
        f"<tr><td>{r['copies']}</td><td>{r['images']}</td><td>{r['memorized_images']}</td>"
        f"<td>{r['image_rate']:.2f}</td><td>{r.get('samples', '')}</td><td>{r.get('memorized_samples', '')}</td>"
        f"<td>{'' if 'sample_rate' not in r else format(r['sample_rate'], '.2f')}</td></tr>" for r in rows)
    return (f"<h2>Duplication vs memorization</h2><table>{head}{body}</table>"
            f"<img alt='extraction rate per duplication level' src='{duplication_plot(rows)}'>")


def duplication_plot(rows: list[dict]) -> str:
    """Bar chart of extraction rate per duplication level, as a PNG data: URI."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = sorted(rows, key=lambda r: r["copies"])
    labels = [f"{r['copies']}x" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.bar([i - 0.2 for i in x], [r["image_rate"] for r in rows], width=0.4, label="images memorized")
    if all("sample_rate" in r for r in rows):
        ax.bar([i + 0.2 for i in x], [r["sample_rate"] for r in rows], width=0.4, label="samples memorized")
    ax.set_xticks(list(x), labels)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("copies in the training set")
    ax.set_ylabel("rate")
    ax.legend(fontsize=8)
    return figure_uri(fig)


def figure_uri(fig) -> str:
    """A matplotlib figure as a PNG data: URI (and closed), for self-contained pages."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
