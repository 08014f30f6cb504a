"""The pages of the artist's check and the researcher's comparison, in the report's style."""

from __future__ import annotations

import html
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from imgextract import rundir
from imgextract.report.html import figure_uri, page, thumbnail_uri
from imgextract.stages.generate import regenerate_command
from imgextract.stages.watermarks import WATERMARKS


def _other_prompt(v) -> str:
    o = v.other_prompt
    if not o:
        return ""
    e = html.escape
    return (f"<p class='other'>Another prompt also comes close to this work: “{e(o['prompt'])}” (seed {o['seed']}, "
            f"tiled L2 {o['tiled_l2']:.3f}).</p>")


def _link(url: str | None) -> str:
    """A stranger's URL as text, a link only when it is http(s) (never javascript: or data:)."""
    e = html.escape
    if not url:
        return "<span class=muted>no URL</span>"
    if url.lower().startswith(("http://", "https://")):
        return f"<a href='{e(url)}' rel='noopener noreferrer nofollow'>{e(url)}</a>"
    return f"<code>{e(url)}</code>"


def _training_copies(v) -> str:
    """The work's copies in the training set: the first half of the artist's question."""
    e = html.escape
    if v.training_copies is None:
        return ""
    if not v.training_copies:
        return ("<section class='training'><h3>In the training set: not found</h3><p class=muted>No training image "
                "in the index is a pixel-verified copy of this work (whole, portion or template). A similar-looking "
                "neighbour does not count.</p></section>")
    rows = "".join(
        f"<tr data-train-id='{c['id']}'><td><img src='{thumbnail_uri(c['path'])}' alt='training copy' "
        f"style='width:64px;height:64px;object-fit:contain'></td><td>#{c['id']}</td><td>{_link(c['url'])}</td>"
        f"<td>{e(c['caption'] or '')}</td><td>{e(c['license'] or 'not recorded')}</td>"
        f"<td>{e(c['kind'])}, {c['share']:.0%}</td></tr>" for c in v.training_copies)
    n = len(v.training_copies)
    return (f"<section class='training'><h3>In the training set: {n} cop{'y' if n == 1 else 'ies'}</h3>"
            f"<table><thead><tr><th>image</th><th>id</th><th>URL</th><th>caption</th><th>licence</th><th>copy</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></section>")


def _prompts(v) -> str:
    e = html.escape
    if not v.prompts:
        return ""
    items = "".join(f"<li data-caption-id='{e(p.caption_id)}'>“{e(p.prompt)}” <span class=muted>({e(p.source)}"
                    f"{f', {p.copies} training copies' if p.copies else ''}; {p.samples} samples)</span></li>"
                    for p in v.prompts)
    return f"<p class=muted>Prompts sampled, in order:</p><ol class='prompts'>{items}</ol>"


def _reproduced_by(v, record: dict) -> str:
    """The caption and seed that drew the copy, the pair side by side."""
    e = html.escape
    by = v.reproduced_by
    if not by:
        return ""
    return (f"<section class='reproduced'><h3>Reproduced by “{e(by['prompt'])}” ({e(by['source'])}), seed "
            f"{by['seed']}</h3><div class=pair><figure><img src='{thumbnail_uri(v.work)}' alt='your work'>"
            f"<figcaption>your work</figcaption></figure><figure><img src='{thumbnail_uri(by['generation_path'])}' "
            f"alt='the sample that copies it'><figcaption>sample, seed {by['seed']}<br><code>"
            f"{e(shlex.join(regenerate_command(record, by['prompt'], int(by['seed']), by['generation_path'])))}</code></figcaption>"
            f"</figure></div></section>")


def _reconstruction(v) -> str:
    e = html.escape
    r = v.reconstruction
    if not r:
        return ""
    null = r["null"]
    rate = (f"{null['reconstructed']} of {null['images']} calibration images ({null['rate']:.0%}, 95% CI "
            f"{null['ci_low']:.0%}–{null['ci_high']:.0%})")
    pair = ""
    if r["reconstructed"]:
        head = f"Reconstructable: the search drew a {e(r['kind'])} copy ({r['share']:.0%})"
        pair = (f"<div class=pair><figure><img src='{thumbnail_uri(v.work)}' alt='your work'><figcaption>your work"
                f"</figcaption></figure><figure><img src='{thumbnail_uri(r['best_path'])}' alt='reconstructed sample'>"
                f"<figcaption>searched input, seed {r['seed']}</figcaption></figure></div>")
    else:
        head = f"Not reconstructed by the search ({r['search_steps']} steps, {r['samples']} samples)"
    return (f"<section class='reconstruction'><h3>{head}</h3><p>The same search, with the same budget, reconstructed "
            f"{rate} the model never saw. {e(r['meaning'])}</p>{pair}</section>")


def write_check_page(out: Path, run: Path, result: list, work_ids: list[str], training_index=None) -> Path:
    """check.html: one card per work (``result``: the artist's verdicts, ``work_ids`` their caption ids)."""
    e = html.escape
    record = rundir.read_json(run / rundir.RUN_JSON)
    matches = pd.read_parquet(run / rundir.MATCHES)
    marks = pd.read_parquet(run / WATERMARKS) if (run / WATERMARKS).is_file() else None
    marked = int(marks["watermark"].fillna(False).sum()) if marks is not None else 0
    searched = (f"Each work was first searched in the training index <code>{e(str(training_index.path))}</code> "
                f"({len(training_index.table)} images) for pixel-verified copies; the captions of its copies were "
                f"sampled first." if training_index is not None else
                "No training index was given (<code>--index</code>): whether a work is in the training set was not "
                "tested.")
    parts = [f"<p class=muted>model "
             f"<code>{e(record['model']['id'])}</code>, {record['sampling']['samples']} samples per prompt, "
             f"{record['sampling']['steps']} steps, guidance {record['sampling']['guidance']}, scheduler "
             f"{e(str(record['sampling']['scheduler']))}, {record['sampling']['height']}x{record['sampling']['width']} px, "
             f"{e(record['sampling']['dtype'])} on {e(record['sampling']['device'])}; stock watermarks found in "
             f"{marked} samples. Each work is judged on the samples drawn for its own prompts.</p><p>{searched}</p>"]
    for v in result:
        if v.verdict == "unreadable":
            parts.append(f"<div class='finding'><div><h2>{e(Path(v.work).name)}: unreadable</h2>"
                         f"<p>{e(v.sentence())}</p></div></div>")
            continue
        own = work_ids[result.index(v)]
        ids = [p.caption_id for p in v.prompts] if v.prompts else [own]
        m = matches[(matches["train_path"] == v.work) & (matches["caption_id"].isin(ids))].sort_values("tiled_l2").head(4)
        gens = "".join(
            f"<figure data-caption-id='{e(str(r['caption_id']))}' data-seed='{int(r['seed'])}'>"
            f"<img src='{thumbnail_uri(r['generation_path'])}' alt='sample'><figcaption>tiled L2 "
            f"{r['tiled_l2']:.3f} · seed {int(r['seed'])}<br><code>"
            f"{e(shlex.join(regenerate_command(record, r['caption'], int(r['seed']), r['generation_path'])))}</code></figcaption></figure>"
            for _, r in m.iterrows())
        terms = "".join(f"<span class='term'>{e(t)}</span> " for t in v.terms())
        parts.append(f"<div class='finding{' hit' if v.verdict == 'reproduced' else ''}' data-work-id='{own}'><div>"
                     f"<h2>{e(Path(v.work).name)}: {e(v.verdict)}</h2><p class='terms'>{terms}</p>"
                     f"<p>{e(v.sentence())}</p>{_training_copies(v)}{_reproduced_by(v, record)}{_reconstruction(v)}"
                     f"{_prompts(v)}<p class=muted>closest samples:</p><div class=pair>"
                     f"<figure><img src='{thumbnail_uri(v.work)}' alt='work'><figcaption>your work</figcaption>"
                     f"</figure>{gens}</div>{_other_prompt(v)}</div></div>")
    path = out / "check.html"
    rundir.write_bytes_atomic(path, page("Can this model reproduce these works?", parts).encode())
    return path


def _plot(result: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2 if result["per_duplication_level"] else 1, figsize=(9, 3.2), dpi=100,
                             squeeze=False)
    runs = result["runs"]
    ax = axes[0][0]
    x = np.arange(len(runs))
    ax.bar(x, [r["rate"] for r in runs], yerr=[[r["rate"] - r["ci_low"] for r in runs],
                                               [r["ci_high"] - r["rate"] for r in runs]], capsize=4)
    ax.set_xticks(x, [r["run"] for r in runs], fontsize=8)
    ax.set_ylabel("captions extracted")
    ax.set_ylim(0, 1.05)
    if result["per_duplication_level"]:
        ax = axes[0][1]
        df = pd.DataFrame(result["per_duplication_level"])
        markers = "osD^vP*X"
        for n, (name, grp) in enumerate(df.groupby("run")):
            grp = grp.sort_values("copies")
            shift = 1 + 0.06 * (n - (df["run"].nunique() - 1) / 2)  # offset on the log axis: coinciding lines stay visible
            ax.errorbar(grp["copies"] * shift, grp["rate"], yerr=[grp["rate"] - grp["ci_low"],
                                                                  grp["ci_high"] - grp["rate"]],
                        marker=markers[n % len(markers)], linestyle="--" if n % 2 else "-", capsize=3, label=name,
                        alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("copies in training set")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
    return figure_uri(fig)


def _rate(r: dict, unit: str) -> str:
    """A rate with its interval, or why there is none: one item cannot estimate a spread."""
    if r["captions"] < 2:
        return f"{r['rate']:.3f} ({r['captions']} {unit}: no interval)"
    return f"{r['rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def compare_page(result: dict) -> str:
    """compare.html: rates per run and per duplication level with their intervals, shared findings."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(r['run'])}</td><td>{e(str(r['model']))}</td><td>{r['extracted']}/{r['captions']}</td>"
                   f"<td>{_rate(r, 'caption')}</td></tr>" for r in result["runs"])
    lv = "".join(f"<tr><td>{e(r['run'])}</td><td>{r['copies']}</td><td>{r['extracted']}/{r['captions']}</td>"
                 f"<td>{_rate(r, 'image')}</td></tr>" for r in result["per_duplication_level"])
    fd = "".join(f"<tr><td><img src='{thumbnail_uri(f['image'])}' alt='memorized training image' "
                 f"style='width:96px;height:96px;object-fit:contain'></td><td><code>{e(Path(f['image']).name)}</code></td>"
                 f"<td>{e(', '.join(f['runs']))}</td>"
                 f"<td>{'all runs' if f['shared'] else 'this run only' if len(f['runs']) == 1 else 'some runs'}</td></tr>"
                 for f in result["findings"])
    body = [f"<p>{result['captions_compared']} captions; a caption is extracted when one of its samples is "
            f"memorized; 95% bootstrap intervals over captions.</p>",
            f"<table class=sortable><thead><tr><th>run</th><th>model</th><th>extracted</th><th>rate [95% CI]</th>"
            f"</tr></thead><tbody>{rows}</tbody></table><img src='{_plot(result)}' alt='rates'>"]
    kinds = "".join(f"<tr><td>{e(r['run'])}</td>" + "".join(
        f"<td>{r['by_kind'][k]['extracted']}/{r['captions']} {_rate({**r['by_kind'][k], 'captions': r['captions']}, 'caption')}"
        f"</td>" for k in ("whole", "portion", "template")) + "</tr>" for r in result["runs"] if "by_kind" in r)
    if kinds:
        body.append("<h2>Per copy kind</h2><table class=sortable><thead><tr><th>run</th><th>whole</th><th>portion</th>"
                    f"<th>template</th></tr></thead><tbody>{kinds}</tbody></table>")
    if lv:
        body.append(f"<h2>Per duplication level</h2><table class=sortable><thead><tr><th>run</th><th>copies</th>"
                    f"<th>extracted</th><th>rate [95% CI]</th></tr></thead><tbody>{lv}</tbody></table>")
    body.append(f"<h2>Memorized training images</h2><table class=sortable><thead><tr><th>image</th><th>file</th>"
                f"<th>reproduced by</th><th>shared</th></tr></thead><tbody>{fd}</tbody></table>")
    return page("Memorization by model", body)
