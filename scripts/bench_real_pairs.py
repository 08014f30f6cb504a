"""Benchmark: the copy verdict and the replication level on real (generation, training match) pairs.

    python scripts/bench_real_pairs.py PAIRS_FOLDER [--descriptor sscd:PATH] [--json out.json]

PAIRS_FOLDER holds the pairs, cut from the papers' public figures and released comparisons (a
generation of a real model beside the training image the paper matched it to), and stays outside the
repository: most figures' licences do not allow redistribution. Either a ``pairs.csv`` with columns
``generation``, ``match`` (paths relative to the folder) and optionally ``label`` (what the paper calls
the pair, e.g. replication / not memorized) and ``source`` (paper, figure), or files named
``NAME_gen.EXT`` and ``NAME_match.EXT``. For every pair it prints the kind, the copied share, the
replication level, tiled L2 (and the SSCD similarity with ``--descriptor``), then counts per label.
Without a folder it says so and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from imgextract.copies import CopyRule, Prepared, judge
from imgextract.replication import replicates, replication_level, replication_scores, replication_screen
from imgextract.distance import block_means, exact_distances, fit, to_uint8
from imgextract.sources.images import BadImage, IMAGE_SUFFIXES, inside, open_rgb


def pairs_of(folder: Path) -> list[dict]:
    """The folder's pairs, from pairs.csv or from NAME_gen / NAME_match file names; paths kept inside it."""
    table = folder / "pairs.csv"
    out = []
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                gen, match = inside(folder, row.get("generation") or ""), inside(folder, row.get("match") or "")
                if gen is None or match is None:
                    print(f"pairs.csv line {n}: a path is missing or outside {folder}; skipped", file=sys.stderr)
                    continue
                out.append({"name": Path(row["generation"]).stem, "generation": gen, "match": match,
                            "label": row.get("label") or "", "source": row.get("source") or ""})
        return out
    for gen in sorted(folder.iterdir()):
        if gen.suffix.lower() in IMAGE_SUFFIXES and gen.stem.endswith("_gen"):
            stem = gen.stem[:-4]
            match = next((m for m in sorted(folder.glob(f"{stem}_match.*")) if m.suffix.lower() in IMAGE_SUFFIXES), None)
            if match is not None:
                out.append({"name": stem, "generation": gen, "match": match, "label": "", "source": ""})
    return out


def grade(gen_path: Path, match_path: Path, rule: CopyRule, descriptor=None) -> dict:
    """One pair as a scan grades it: the training match fitted to the generation's size, judged, then the level."""
    gen_im = open_rgb(gen_path)
    gen = to_uint8(gen_im)
    train = to_uint8(fit(open_rgb(match_path), gen.shape[:2]))
    j = judge(gen, train, rule)
    score = float(replication_scores(block_means(gen), block_means(train)[None])[0])
    again = j.kind == "none" and replication_screen(block_means(gen), block_means(train)[None])[0] and \
        replicates(Prepared(gen), Prepared(train), rule).kind != "none"
    sscd = None
    if descriptor is not None:
        a, b = descriptor.embed([gen_im, open_rgb(match_path)])
        sscd = float(np.dot(a, b))
    return {"kind": j.kind, "copied_share": round(j.share, 3), "level": replication_level(j.kind, again, sscd),
            "replication_score": round(score, 3), "tiled_l2": round(float(exact_distances(gen, [train])[0][0]), 3),
            "size": list(gen.shape[:2]), **({"sscd_similarity": round(sscd, 3)} if sscd is not None else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", type=Path, help="the pairs (kept outside the repository)")
    ap.add_argument("--descriptor", help="sscd:PATH: also the SSCD similarity of each pair")
    ap.add_argument("--json", type=Path, help="write the per-pair rows here")
    args = ap.parse_args()
    if args.folder is None or not args.folder.is_dir():
        print("no pairs folder given (or it does not exist): nothing to measure. Collect real (generation, match) "
              "pairs from the papers' figures into a folder outside the repository and pass it; see this script's "
              "docstring for the layout.")
        return
    descriptor = None
    if args.descriptor:
        from imgextract.models.descriptors import load_descriptor, resolved_spec
        descriptor = load_descriptor(resolved_spec(args.descriptor), "cpu")
    rule = CopyRule()
    rows = []
    for p in pairs_of(args.folder):
        try:
            got = grade(p["generation"], p["match"], rule, descriptor)
        except BadImage as bad:
            print(f"{p['name']}: {bad.path}: {bad.reason}; skipped", file=sys.stderr)
            continue
        rows.append({"name": p["name"], "label": p["label"], "source": p["source"], **got})
        sscd = f", SSCD {got['sscd_similarity']:.3f}" if "sscd_similarity" in got else ""
        print(f"{p['name']:28s} {p['label'][:18]:18s} kind {got['kind']:8s} share {got['copied_share']:.2f} "
              f"level {got['level']:19s} thumbs {got['replication_score']:.3f} tiled L2 {got['tiled_l2']:.3f}{sscd}")
    labels = sorted({r["label"] for r in rows})
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        levels = {lv: sum(r["level"] == lv for r in mine) for lv in ("near-exact", "replication", "partial replication", "none")}
        print(f"{label or '(no label)'}: {len(mine)} pairs; " + ", ".join(f"{k} {v}" for k, v in levels.items() if v))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
