"""A toy's training set labelled in Webster's ground-truth form with planted noise, for `labels verify`.

Writes, into OUT: ``train.csv`` (path, caption, url of every training image but the ones left out) and
``groundtruth.parquet`` (caption, url, overfit_type, gen_seeds, retrieved_urls). The labels follow the
toy's own ``copies.csv`` (10+ copies: MV, a template family member: TV, a single image: N), then some are
flipped and some originals are left out of the index, chosen by a seeded generator and printed, so the
cleaned labels can be set against what was planted.

    python scripts/planted_labels.py TOY_FOLDER OUT --flip-memorized 2 --flip-clean 5 --missing 3
    imgextract index build OUT/train.csv --name planted
    imgextract labels verify OUT/groundtruth.parquet --model TOY_FOLDER --index planted --out OUT/verify
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("toy", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--flip-memorized", type=int, default=2, help="memorized images' captions labelled N")
    ap.add_argument("--flip-clean", type=int, default=5, help="single images' captions labelled MV")
    ap.add_argument("--missing", type=int, default=3, help="originals left out of the index")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    copies = pd.read_csv(a.toy / "train" / "copies.csv")
    family = copies["family"].fillna("").astype(str)
    truth = np.where(family != "", "TV", np.where(copies["copies"] >= 10, "MV", "N"))
    rng = np.random.default_rng(a.seed)
    mem, clean = np.flatnonzero(truth == "MV"), np.flatnonzero(truth == "N")
    to_n = rng.choice(mem, min(a.flip_memorized, len(mem)), replace=False)
    to_mv = rng.choice(clean, min(a.flip_clean, len(clean)), replace=False)
    rest = np.setdiff1d(np.arange(len(copies)), np.concatenate([to_n, to_mv]))
    missing = rng.choice(rest, min(a.missing, len(rest)), replace=False)
    labels = truth.copy()
    labels[to_n], labels[to_mv] = "N", "MV"
    urls = [f"https://toy.example/{f}" for f in copies["file"]]
    a.out.mkdir(parents=True, exist_ok=True)
    keep = [i for i in range(len(copies)) if i not in set(missing)]
    pd.DataFrame({"path": [str((a.toy / "train" / copies["file"][i]).resolve()) for i in keep],
                  "caption": [copies["caption"][i] for i in keep], "url": [urls[i] for i in keep]}
                 ).to_csv(a.out / "train.csv", index=False)
    pd.DataFrame({"caption": copies["caption"], "url": urls, "overfit_type": labels,
                  "gen_seeds": [[] for _ in urls], "retrieved_urls": [[] for _ in urls]}
                 ).to_parquet(a.out / "groundtruth.parquet")
    planted = {"memorized_labelled_N": [copies["file"][i] for i in to_n],
               "single_labelled_MV": [copies["file"][i] for i in to_mv],
               "left_out_of_the_index": [copies["file"][i] for i in missing],
               "labels": dict(zip(*np.unique(labels, return_counts=True)))}
    planted["labels"] = {k: int(v) for k, v in planted["labels"].items()}
    (a.out / "planted.json").write_text(json.dumps(planted, indent=2))
    print(json.dumps(planted, indent=2))


if __name__ == "__main__":
    main()
