"""The HTML report: one entry per memorized training image, read as evidence.

An entry shows the training image and its closest generation side by side, a map of the
per-tile distances (the worst tile decides the verdict), the other copies, the prompt, seed
and command that redraw it, its source and licence, and the legal term that applies. Small
reports embed every image (one file to mail); large ones write JPEG thumbnails beside the page
and lazy-load them. Every caption, path and command is escaped with ``html.escape``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from imgextract import distance, rundir
from imgextract.copies import copy_words
from imgextract.errors import InputError
from imgextract.report.html import THUMB, Thumbs, esc, figure_uri, page
from imgextract.sources.images import BadImage, open_rgb
from imgextract.sources.tables import LICENSE_COLUMNS, SOURCE_COLUMNS
from imgextract.stages.cliques import confirm
from imgextract.stages.generate import regenerate_command
from imgextract.stages.scan import strongest_first
from imgextract.stages.watermarks import WATERMARKS
from imgextract.stats import bootstrap_ci
from imgextract.copies import CopyRule

MAX_ENTRIES = 200        # training-image entries in the page; the rest are in summary.json / matches.parquet
STRIP = 8                # other generations shown per entry
TABLE_ROWS = 1000        # per-caption rows in the page
INLINE_MAX = 300         # at most this many thumbnails inline (one mailable file); beyond, files beside it
def tile_map(generation: str, training: str, grid: int, threshold: float, side: int = THUMB) -> Image.Image | None:
    """The generation, enlarged, with its grid×grid tiles and each tile's RMS distance to the
    training image written in it; tiles at or over the threshold in red, the worst one outlined."""
    from PIL import ImageDraw, ImageFont
    try:
        gen = open_rgb(Path(generation))
        train = open_rgb(Path(training))
    except BadImage:
        return None
    g = distance.to_array(gen)
    t = distance.to_array(train, (gen.height, gen.width))
    rms = np.sqrt(distance.tile_mse((g - t) ** 2, grid))
    scale = side / max(gen.size)
    big = gen.resize((max(1, round(gen.width * scale)), max(1, round(gen.height * scale))),
                     Image.NEAREST if scale >= 2 else Image.LANCZOS)
    draw = ImageDraw.Draw(big, "RGBA")
    ys = distance.tile_edges(gen.height, grid) * scale
    xs = distance.tile_edges(gen.width, grid) * scale
    try:
        font = ImageFont.load_default(size=max(9, int(side / grid / 4)))
    except TypeError:
        font = ImageFont.load_default()
    worst = np.unravel_index(int(np.argmax(rms)), rms.shape)
    for i in range(grid):
        for j in range(grid):
            box = [xs[j], ys[i], xs[j + 1] - 1, ys[i + 1] - 1]
            bad = rms[i, j] >= threshold
            draw.rectangle(box, outline=(255, 255, 255, 200), width=1)
            text = f"{rms[i, j]:.2f}"
            label = draw.textbbox((box[0] + 3, box[1] + 2), text, font=font)
            draw.rectangle([label[0] - 1, label[1] - 1, label[2] + 1, label[3] + 1], fill=(0, 0, 0, 160))
            draw.text((box[0] + 3, box[1] + 2), text, font=font, fill=(255, 80, 80) if bad else (120, 255, 120))
    w = [xs[worst[1]], ys[worst[0]], xs[worst[1] + 1] - 1, ys[worst[0] + 1] - 1]
    draw.rectangle(w, outline=(255, 40, 40, 255), width=3)
    return big


def legal_term(record: dict | None, prompts: list[str], train_caption) -> tuple[str, str]:
    """(Cooper & Grimmelmann's term, why) for one memorized training image."""
    targeted = bool(record and record.get("selection"))
    ordinary = [p for p in prompts if train_caption is not None and str(p).strip() == str(train_caption).strip()]
    if ordinary and not targeted:
        return "regurgitated", ("an ordinary prompt, the image's own training caption, produced the copy "
                                "with the model's usual sampling")
    if targeted:
        why = f"a targeted search ({record['selection'].get('method', 'triage')} ranking, top " \
              f"{record['selection'].get('top')} captions) produced the copy"
    else:
        why = "prompts other than the image's training caption, chosen by the auditor, produced the copy"
    return "extracted", why


def with_copy_columns(matches: pd.DataFrame) -> pd.DataFrame:
    """Matches of a scan made before the copy verdict (no or empty copy columns): a memorized row reads
    as a whole copy of the whole image."""
    m = matches.copy()
    memorized = m["memorized"].fillna(False).astype(bool)
    for col, hit, miss in (("copy_kind", "whole", "none"), ("copied_share", 1.0, 0.0), ("copied_area", 0.0, 0.0),
                           ("copy_mask", "", "")):
        values = m[col] if col in m else pd.Series([None] * len(m), index=m.index)
        m[col] = values.where(values.notna(), pd.Series(np.where(memorized, hit, miss), index=m.index))
    for col in ("copy_offset", "template_members"):
        values = m[col] if col in m else pd.Series([None] * len(m), index=m.index)
        m[col] = [v if isinstance(v, (list, np.ndarray)) else [] for v in values]
    return m


def mask_overlay(generation: str, mask_hex: str, side: int = THUMB) -> Image.Image | None:
    """The generation, enlarged, with the copied blocks (copy_mask) tinted and outlined."""
    from PIL import ImageDraw

    from imgextract.copies import MASK, mask_from_hex
    if not mask_hex:
        return None
    try:
        gen = open_rgb(Path(generation))
    except BadImage:
        return None
    scale = side / max(gen.size)
    big = gen.resize((max(1, round(gen.width * scale)), max(1, round(gen.height * scale))),
                     Image.NEAREST if scale >= 2 else Image.LANCZOS).convert("RGBA")
    layer = Image.new("RGBA", big.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    ys, xs = distance.tile_edges(big.height, MASK), distance.tile_edges(big.width, MASK)
    for i, j in zip(*np.nonzero(mask_from_hex(mask_hex))):
        draw.rectangle([xs[j], ys[i], xs[j + 1] - 1, ys[i + 1] - 1], fill=(230, 40, 40, 90), outline=(230, 40, 40, 220))
    return Image.alpha_composite(big, layer).convert("RGB")


def _entry(tid: int, grp: pd.DataFrame, record: dict | None, params: dict, index_row: dict, thumbs: Thumbs,
           marks: dict | None, drawn: dict, index_table: pd.DataFrame | None = None) -> str:
    grp = strongest_first(grp)
    best = grp.iloc[0]
    prompts = sorted(set(grp["caption"].dropna().astype(str)))
    term, why = legal_term(record, prompts, best.get("train_caption"))
    n_drawn = sum(drawn.get(c, 0) for c in set(grp["caption_id"].dropna()))
    kind, share = str(best["copy_kind"]), float(best["copied_share"])
    members = [int(m) for m in (best.get("template_members") if best.get("template_members") is not None else [])]
    mask = best.get("template_mask")
    what = copy_words(kind, share, len(members), mask if isinstance(mask, str) else "")
    extent = ("the whole image" if kind == "whole" else
              f"{share:.0%} of the published template's fixed region (its mask {mask})" if what.find("published") >= 0 else
              f"{share:.0%} of the image, a substantial portion (at least "
              f"{params.get('min_share', CopyRule.min_share):.0%} of its detail)")
    sentence = (f"Training image #{tid} was memorized and {term}: {why}; {len(grp)} generation(s)"
                f"{f' of {n_drawn} drawn for that prompt' if n_drawn else ''} reproduce {extent} near-exactly "
                f"({what}; best tiled L2 {best['tiled_l2']:.3f}).")
    box = None
    mark = (marks or {}).get(best["generation_path"])
    if mark is not None and mark["watermark"] and mark["box"] is not None:
        box = list(mark["box"])
    tmap = tile_map(best["generation_path"], best["train_path"], int(params["grid"]), float(params["threshold"]))
    overlay = mask_overlay(best["generation_path"], best.get("copy_mask") or "")
    moved = list(best.get("copy_offset") if best.get("copy_offset") is not None else [])[:2] not in ([], [0.0, 0.0])
    tile_caption = ("RMS distance per tile; the worst (outlined) decides" if kind == "whole" and not moved else
                    "Carlini's pixel-aligned tile distances: they miss moved copies and portions; the copied "
                    "region decides")
    family = "".join(f"<figure>{thumbs.img(index_table['path'].iat[m], 'template member', side=128)}<figcaption>"
                     f"#{m}</figcaption></figure>" for m in members
                     if index_table is not None and 0 <= m < len(index_table))
    cmd = shlex.join(regenerate_command(record, best["caption"], int(best["seed"]), best["generation_path"])) \
        if record is not None and pd.notna(best.get("seed")) else ""
    source = next((index_row[c] for c in index_row if c.lower() in SOURCE_COLUMNS and index_row[c]), None)
    licence = next((index_row[c] for c in index_row if c.lower() in LICENSE_COLUMNS and index_row[c]), None)
    marked = sum(bool((marks or {}).get(p, {}).get("watermark")) for p in grp["generation_path"]) if marks else None
    meta = [("generations", f"{len(grp)}" + (f" of {n_drawn} drawn" if n_drawn else "")),
            ("copy", f"{what}; copied share {share:.2f}, copied area {float(best.get('copied_area') or 0):.2f}"),
            ("tiled L2 best / median", f"{best['tiled_l2']:.4f} / {grp['tiled_l2'].median():.4f}"),
            ("phash distance (best)", int(grp.loc[grp["phash_distance"] >= 0, "phash_distance"].min())
             if (grp["phash_distance"] >= 0).any() else "not computed"),
            ("prompt(s)", " | ".join(prompts[:5]) + (f" (+{len(prompts) - 5})" if len(prompts) > 5 else "")),
            ("training caption", best.get("train_caption")), ("best seed", best.get("seed")),
            ("source", source), ("licence", licence),
            ("watermark", None if marked is None else f"{marked} of {len(grp)} generations carry a stock mark"),
            ("training image", best["train_path"]), ("closest generation", best["generation_path"])]
    cells = "".join(f"<tr><td class=muted>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in meta if esc(v))
    strip = "".join(f"<figure>{thumbs.img(r['generation_path'], 'generation', side=128)}<figcaption>"
                    f"{r['tiled_l2']:.3f}</figcaption></figure>" for _, r in grp.iloc[1:1 + STRIP].iterrows())
    rows = "".join(f"<tr><td>{esc(r['caption'])}</td><td>{esc(r.get('seed'))}</td><td>{r['tiled_l2']:.4f}</td>"
                   f"<td>{esc(r['phash_distance'])}</td><td><code>{esc(r['generation_path'])}</code></td></tr>"
                   for _, r in grp.iterrows())
    return (f"<section class=entry data-train-id='{int(tid)}'><h3>Training image #{int(tid)}: "
            f"<span class=term>memorized, {term}</span>: <span class=kind data-kind='{esc(kind)}'>{esc(what)}</span>"
            f"</h3><p>{esc(sentence)}</p><div class=pair>"
            f"<figure>{thumbs.img(best['train_path'], 'training image')}<figcaption>training image "
            f"#{int(tid)}</figcaption></figure>"
            f"<figure>{thumbs.img(best['generation_path'], 'closest generation', box)}<figcaption>closest "
            f"generation, tiled L2 {best['tiled_l2']:.3f}</figcaption></figure>"
            + (f"<figure>{thumbs.img(best['generation_path'] + '#tiles', 'tile distances', image=tmap)}"
               f"<figcaption>{tile_caption}</figcaption></figure>" if tmap else "")
            + (f"<figure>{thumbs.img(best['generation_path'] + '#mask', 'copied region', image=overlay)}"
               f"<figcaption>copied region (red: near-exact, detailed)</figcaption></figure>" if overlay else "")
            + f"</div><table class=meta>{cells}</table>"
            + (f"<p class=muted>the template's family: the {len(members)} training images that share the copied "
               f"region</p><div class=strip>{family}</div>" if family else "")
            + (f"<p>redraw the best: <code>{esc(cmd)}</code></p>" if cmd else "")
            + (f"<p class=muted>other memorized generations ({len(grp) - 1}):</p><div class=strip>{strip}</div>"
               if len(grp) > 1 else "")
            + f"<details><summary>all {len(grp)} generations</summary><table><thead><tr><th>prompt</th><th>seed</th>"
              f"<th>tiled L2</th><th>phash</th><th>file</th></tr></thead><tbody>{rows}</tbody></table></details>"
              "</section>")


def _finding(row: pd.Series, record: dict | None, thumbs: Thumbs) -> str:
    """A nearest (not memorized) candidate, shown when nothing was memorized."""
    cmd = shlex.join(regenerate_command(record, row["caption"], int(row["seed"]), row["generation_path"])) \
        if record is not None and pd.notna(row.get("seed")) else ""
    return (f"<div class=finding><div class=pair><figure>{thumbs.img(row['generation_path'], 'generation')}"
            f"<figcaption>generation</figcaption></figure><figure>{thumbs.img(row['train_path'], 'training image')}"
            f"<figcaption>training image #{esc(row['train_id'])}, tiled L2 {l2_text(row['tiled_l2'], row.get('exact'), 3)}"
            "</figcaption></figure>"
            f"</div><div><p>{esc(row.get('caption'))}</p><code>{esc(row['generation_path'])}</code>"
            + (f"<p>redraw: <code>{esc(cmd)}</code></p>" if cmd else "") + "</div></div>")


def l2_text(value: float, exact=True, digits: int = 4) -> str:
    """A distance as text; a thumbnail lower bound (the scan's ``exact`` is False) reads "≥ 0.3120"."""
    return f"{'' if exact is None or bool(exact) else '≥ '}{value:.{digits}f}"


def _per_caption_table(summary: dict) -> str:
    rows = sorted(summary.get("per_caption") or [], key=lambda r: (-r["rate"], r["best_tiled_l2"]))
    if not rows:
        return ""
    body = "".join(f"<tr><td>{esc(r['caption_id'])}</td><td>{esc(r['caption'])}</td><td>{r['samples']}</td>"
                   f"<td>{r['memorized_samples']}</td><td>{r['rate']:.2f}</td><td>{l2_text(r['best_tiled_l2'], r.get('best_exact'))}</td></tr>"
                   for r in rows[:TABLE_ROWS])
    more = f" (first {TABLE_ROWS} of {len(rows)}; all in summary.json)" if len(rows) > TABLE_ROWS else ""
    return (f"<h2>Per caption{more}</h2><input class=filter data-table=per-caption placeholder='filter captions'>"
            "<table id=per-caption class=sortable><thead><tr><th>id</th><th>caption</th><th>samples</th>"
            f"<th>memorized</th><th>rate</th><th>best tiled L2</th></tr></thead><tbody>{body}</tbody></table>")


def executive_summary(summary: dict, record: dict | None) -> str:
    """The numbers an auditor pastes, and what was not tested, so a clean result is not over-read."""
    p = summary["parameters"]
    per = summary.get("per_caption") or []
    hit = np.array([r["memorized_samples"] > 0 for r in per], dtype=float)
    share = f"{hit.mean():.3f}" if len(hit) else "n/a"
    if len(hit) > 1:
        lo, hi = bootstrap_ci(hit, 1000, 0)
        share += f" (95% CI {lo:.3f}–{hi:.3f}, captions resampled)"
    w = summary.get("watermarks")
    marks = f"{w['watermarked']} of {w['generations_checked']} generations" if w else "not checked"
    samples = record["sampling"]["samples"] if record else None
    items = [("model", f"{record['model']['id']} (sha256 {record['model']['fingerprint'][:16]})" if record else
              "not recorded (a plain folder was scanned)"),
             ("captions", len(per) if per else "n/a"), ("samples per caption", samples or "n/a"),
             ("generations scanned", summary["generations_scanned"]),
             ("threshold", f"tiled L2 < {p['threshold']} on {p['grid']}×{p['grid']} tiles for whole copies; "
                           f"portions and templates from {p.get('min_share', CopyRule.min_share):.0%} of a training image's detail; "
                           f"k={p['k']} candidates from {p['embedder']}"),
             ("training images memorized", len(summary["memorized_images"])),
             ("memorized generations by copy kind", ", ".join(f"{k} {n}" for k, n in summary["copies"].items())
              if summary.get("copies") else "whole copies only (a scan made before the copy verdict)"),
             ("captions with a memorized sample", share), ("stock watermarks", marks)]
    if summary.get("incomplete"):
        inc = summary["incomplete"]
        items.append(("incomplete", f"only {inc['shards_finished']} of {inc['shards_planned']} shards generated"))
    untested = (f"Only {samples or 'the given'} samples per caption with these seeds and settings were tested; "
                "other seeds, prompts and captions were not, and a candidate must be among the k nearest by the "
                "embedder to be tested. A clean result does not show that nothing is memorized.")
    text = "\n".join(f"{k}: {v}" for k, v in items) + "\nnot tested: " + untested
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return (f"<div class=summary id=summary><h2>Executive summary</h2><dl>{dl}</dl><p><b>Not tested.</b> "
            f"{esc(untested)}</p><details><summary>as text</summary><pre>{esc(text)}</pre></details></div>")


# fields of summary.json the page prints as numbers: a run folder someone sent may have been edited
NUMBERS = ("generations_scanned", "memorized_generations", "replications.*.replication_score", "replications.*.train_id", "parameters.threshold", "parameters.grid", "parameters.k",
           "parameters.min_share", "per_caption.*.samples", "per_caption.*.memorized_samples", "per_caption.*.rate",
           "per_caption.*.best_tiled_l2", "watermarks.watermarked", "watermarks.generations_checked",
           "watermarks.training_images_checked", "watermarks.per_caption.*.watermarked",
           "watermarks.per_caption.*.samples", "duplication.*.copies", "duplication.*.images",
           "duplication.*.memorized_images", "duplication.*.image_rate", "duplication.*.samples",
           "duplication.*.memorized_samples", "duplication.*.sample_rate", "incomplete.shards_finished",
           "incomplete.shards_planned", "copies.*", "memorized_images.*.generations",
           "memorized_images.*.best_tiled_l2", "memorized_images.*.train_id")


def replication_section(summary: dict, thumbs: Thumbs) -> str:
    """Generations the near-exact test refused that still replicate a training image: listed, never clean."""
    from imgextract.replication import level_words
    reps = summary.get("replications") or []
    if not reps:
        return ""
    items = []
    for r in reps[:MAX_ENTRIES]:
        sscd = r.get("sscd_similarity")
        words = level_words(str(r["level"]), sscd)
        items.append(f"<div class=finding data-replication='{esc(r['level'])}'><figure>"
                     f"{thumbs.img(r['generation_path'], 'generation', side=128)}<figcaption>generation</figcaption>"
                     f"</figure><figure>{thumbs.img(r['train_path'], 'training image', side=128)}<figcaption>training "
                     f"image #{int(r['train_id'])}</figcaption></figure><p>{esc(Path(r['generation_path']).name)}: "
                     f"{esc(words)}. Not counted as memorized: no block of it is a near-exact copy, but it is not "
                     f"clean either.</p></div>")
    return (f"<h2>Replications the near-exact test refused ({len(reps)})</h2><p class=muted>A near-exact copy "
            "reproduces the training image's pixels block by block; a replication reproduces the image under "
            "compression, blur, resizing or a tone change, which the near-exact test does not accept as a copy. "
            "Listed so that an auditor sees them.</p>" + "".join(items))


def check_numbers(summary, path: Path) -> None:
    """Every field the page prints as a number is one (or absent), else an error naming the field."""
    def walk(node, parts, where):
        if not parts:
            if node is not None and (isinstance(node, bool) or not isinstance(node, (int, float))):
                raise InputError(f"{path}: {where} is {str(node)[:40]!r}, not a number (an edited summary?)",
                                 "re-run `imgextract scan` on the folder to rewrite summary.json")
            return
        head, rest = parts[0], parts[1:]
        if head == "*":
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
            for k, v in items:
                walk(v, rest, f"{where}[{k}]")
        elif isinstance(node, dict) and head in node:
            walk(node[head], rest, f"{where}.{head}" if where else head)
    if not isinstance(summary, dict):
        raise InputError(f"{path} is not a JSON object", "re-run `imgextract scan` on the folder to rewrite it")
    for field in NUMBERS:
        walk(summary, field.split("."), "")


def render_report(out: Path, title: str = "imgextract report", inline: bool | None = None) -> Path:
    """Write ``report.html`` into a run (or scan output) folder that holds matches and a summary.

    One entry per memorized training image, most reproduced first. ``inline``: embed every image
    (one self-contained file); by default only while the page needs at most ``INLINE_MAX`` of them.
    """
    out = Path(out)
    if not (out / rundir.MATCHES).is_file() or not (out / rundir.SUMMARY).is_file():
        raise InputError(f"{out} has no {rundir.MATCHES}/{rundir.SUMMARY}",
                         f"run `imgextract scan` with --out {out} first")
    matches = pq.read_table(out / rundir.MATCHES).to_pandas()
    summary = rundir.read_json(out / rundir.SUMMARY)
    check_numbers(summary, out / rundir.SUMMARY)
    record = rundir.read_json(out / rundir.RUN_JSON) if rundir.is_run_dir(out) else None
    matches = with_copy_columns(matches)
    best = matches.sort_values("tiled_l2").drop_duplicates("generation_path")
    hits = strongest_first(matches[matches["memorized"]]).drop_duplicates("generation_path")
    groups = sorted(hits.groupby("train_id"), key=lambda kv: (-len(kv[1]), kv[1]["tiled_l2"].min()))
    shown = groups[:MAX_ENTRIES]
    n_images = sum(3 + min(STRIP, len(g) - 1) for _, g in shown) if shown else 20
    thumbs = Thumbs(out, inline if inline is not None else n_images <= INLINE_MAX)
    marks = None
    if (out / WATERMARKS).is_file():
        wm = pq.read_table(out / WATERMARKS).to_pandas()
        marks = {r["path"]: r for _, r in wm.iterrows()}
    index_table = _index_table(summary["parameters"].get("index_path"))
    drawn = best.groupby("caption_id").size().to_dict() if best["caption_id"].notna().any() else {}
    p = summary["parameters"]
    parts = [executive_summary(summary, record)]
    stats = [("generations scanned", summary["generations_scanned"]),
             ("memorized generations", summary["memorized_generations"]),
             ("training images memorized", len(summary["memorized_images"])),
             ("unreadable, skipped", len(summary["skipped"]))]
    parts.append("<div class=stats>" + "".join(f"<div class=stat><b>{esc(v)}</b>{esc(k)}</div>" for k, v in stats)
                 + "</div>")
    parts.append(extra_sections(summary))
    if groups:
        more = f"; the first {MAX_ENTRIES} shown, all in matches.parquet" if len(groups) > MAX_ENTRIES else ""
        parts.append(f"<h2>Memorized training images ({len(groups)}, from {len(hits)} generations{more})</h2>"
                     "<p class=muted>Each entry: the training image and its closest generation side by side, the "
                     "distance of every tile (the worst tile decides), then its other copies.</p>")
        parts.extend(_entry(int(tid), grp, record, p, _row(index_table, int(tid)), thumbs, marks, drawn, index_table)
                     for tid, grp in shown)
    else:
        parts.append("<h2>No memorized generation found</h2><p>Nearest candidates, for inspection:</p>")
        on_disk = best[[Path(p).is_file() for p in best["generation_path"]]]  # --keep evidence drops far samples
        if len(on_disk) < len(best):
            parts.append(f"<p class=muted>{len(best) - len(on_disk)} samples were not kept (keep = evidence); "
                         "their rows are in matches.parquet and each can be redrawn from its seed.</p>")
        parts.extend(_finding(r, record, thumbs) for _, r in on_disk.head(10).iterrows())
    parts.append(replication_section(summary, thumbs))
    parts.append(clique_section(out, thumbs))
    parts.append(watermark_section(summary, marks))
    parts.append(_per_caption_table(summary))
    if summary["skipped"]:
        items = "".join(f"<li><code>{esc(s['path'])}</code>: {esc(s['reason'])}</li>" for s in summary["skipped"][:500])
        parts.append(f"<h2>Skipped (unreadable: {len(summary['skipped'])})</h2><ul>{items}</ul>")
    path = out / rundir.REPORT
    rundir.write_bytes_atomic(path, page(title, parts).encode("utf-8"))
    return path


def _index_table(index_path: str | None) -> pd.DataFrame | None:
    if not index_path or not (Path(index_path) / "images.parquet").is_file():
        return None
    return pq.read_table(Path(index_path) / "images.parquet").to_pandas()


def _row(table: pd.DataFrame | None, tid: int) -> dict:
    if table is None or not 0 <= tid < len(table):
        return {}
    return {k: v for k, v in table.iloc[tid].items() if not isinstance(v, float) or not pd.isna(v)}


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
        body = "".join(f"<tr><td>{esc(r['caption'])}</td><td>{r['watermarked']}/{r['samples']}</td>"
                       f"<td>{esc(', '.join(r['brands']))}</td><td>{esc(r['train_watermarked'])}</td>"
                       f"<td>{esc(r['reproduced'])}</td></tr>" for r in rows)
        if body:
            parts.append("<table><tr><th>caption</th><th>marked samples</th><th>brands</th>"
                         f"<th>training image marked</th><th>reproduced</th></tr>{body}</table>")
    elif marks:
        flagged = [m for m in marks.values() if m["watermark"]]
        body = "".join(f"<tr><td><code>{esc(m['path'])}</code></td><td>{esc(m['brand'])}</td><td>{esc(m['text'])}</td>"
                       f"<td>{esc(list(m['box']) if m['box'] is not None else '')}</td></tr>" for m in flagged[:200])
        parts.append(f"<p>{len(flagged)} of {len(marks)} images carry a mark.</p>")
        if body:
            parts.append(f"<table><tr><th>image</th><th>brand</th><th>text</th><th>box</th></tr>{body}</table>")
    return "".join(parts)


def clique_section(out: Path, thumbs: Thumbs | None = None, max_images: int = 12) -> str:
    """Flagged cliques (training-set-free test), each as a strip of its member images."""
    path = out / "cliques.parquet"
    if not path.is_file():
        return ""
    thumbs = thumbs or Thumbs()
    table = confirm(pq.read_table(path).to_pandas(), out / rundir.MATCHES)  # as of the latest scan
    flagged = table[table["flagged"]].sort_values("largest_clique", ascending=False)
    first = table.iloc[0] if len(table) else None
    params = (f"delta {first['delta']}, min size {first['min_size']}" if first is not None else "")
    parts = [f"<h2>Cliques among generations ({len(flagged)} of {len(table)} captions flagged; {esc(params)})</h2>"]
    for _, r in flagged.iterrows():
        members = list(r["members"])
        strip = "".join(f"<figure>{thumbs.img(p, 'member', side=128)}</figure>" for p in members[:max_images])
        bound = "" if r["exact"] else f" — search bound hit, true size at most {int(r['upper_bound'])}"
        parts.append(f"<div class=finding><div><p><b>{esc(r['caption'])}</b>: clique of {int(r['largest_clique'])} "
                     f"of {int(r['n_generations'])} generations, mean tiled L2 {r['mean_distance']:.4f}{esc(bound)} — "
                     f"<i>{esc(r['confirmation'])}</i></p>"
                     f"<div class=strip>{strip}</div></div></div>")
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

