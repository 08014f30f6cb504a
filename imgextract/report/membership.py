"""membership.html: the collection test's verdict in words, the two score distributions, and its null."""

from __future__ import annotations

import numpy as np

from imgextract.report.html import esc, figure_uri, page


def _plot(result: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nulls = result["null"]["p_values"]
    fig, axes = plt.subplots(1, 2 if nulls else 1, figsize=(9 if nulls else 5, 3.2), dpi=100, squeeze=False)
    ax = axes[0][0]
    images = result["images"]
    for side, colour in (("works", "#c0392b"), ("references", "#2c6fbb")):
        scores = [r["score"] for r in images if r["side"] == side and r["held_out"]]
        if scores:
            ax.hist(scores, bins=min(20, max(4, len(scores))), alpha=0.55, color=colour,
                    label=f"{side} (held out, {len(scores)})")
    ax.set_xlabel("membership score (higher: more like a training image)")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    if nulls:
        ax = axes[0][1]
        ax.hist(nulls, bins=np.linspace(0, 1, 11), color="#888")
        ax.axvline(result["alpha"], color="#c0392b", linestyle="--")
        ax.set_xlabel("p-value of reference half against reference half")
        ax.set_ylabel("splits")
    return figure_uri(fig)


def _fmt(x, spec: str) -> str:
    return "not defined (one image a side)" if x is None else format(x, spec)


def membership_page(result: dict) -> str:
    """The page beside membership.json; every value escaped."""
    t = result["test"]
    null = result["null"]
    null_line = (f"<p>The null, run here: the same test between two disjoint halves of the references, "
                 f"{len(null['p_values'])} random splits. p below {result['alpha']} in {null['false_positives']} of them: "
                 f"a measured false-positive rate of {null['false_positive_rate']:.2f} (uniform p-values give "
                 f"{result['alpha']}).</p>" if null["p_values"] else
                 "<p class=muted>The null was not run (<code>--null-splits N</code> runs it: two disjoint halves of "
                 "the references, tested the same way).</p>")
    rows = "".join(f"<tr><td><code>{esc(r['path'])}</code></td><td>{esc(r['side'])}</td><td>{r['score']:.3f}</td>"
                   f"<td>{'tested' if r['held_out'] else 'fitted the direction'}</td></tr>" for r in result["images"])
    skipped = "".join(f"<li><code>{esc(s['path'])}</code>: {esc(s['reason'])}</li>" for s in result["skipped"])
    body = [f"<div class=summary><p><b>{esc(result['verdict'])}</b></p><dl>"
            f"<dt>p-value</dt><dd>{t['p_value']:.3g} (one-sided; the smallest this split can show: {t['min_p']:.3g}, "
            f"{'exact over' if t['exact'] else 'Monte Carlo,'} {t['relabellings']} relabellings)</dd>"
            f"<dt>effect</dt><dd>AUC {_fmt(t['auc'], '.3f')} (chance a held-out work outscores a held-out reference; "
            f"0.5 = no difference), Cohen's d {_fmt(t['cohen_d'], '.2f')}</dd>"
            f"<dt>images</dt><dd>{result['works']} works, {result['references']} references; direction fitted on "
            f"{t['fit_works']} + {t['fit_refs']}, tested on {t['test_works']} + {t['test_refs']}</dd>"
            f"<dt>model</dt><dd><code>{esc(result['model'])}</code> ({esc(result['family'])}), "
            f"{result['size'][0]}x{result['size'][1]} px, {esc(result['conditioning'])}</dd></dl></div>",
            f"<p class=muted>{esc(result['meaning'])}</p>",
            f"<img src='{_plot(result)}' alt='score distributions'>", null_line,
            "<h2>Per image</h2><table class=sortable><thead><tr><th>image</th><th>side</th><th>score</th><th>role</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"]
    if skipped:
        body.append(f"<h2>Skipped</h2><ul>{skipped}</ul>")
    return page("Were these works in the training set?", body)
