"""The scan's parallel plan against the plain per-candidate loop on each workload kind the scan benchmark varies
(tiny stand-ins): candidates per generation (k = 5, 10, 40), generation sizes, training images of one size or
mixed, and no, some or many copies. The plain loop embeds and searches each generation, decodes every candidate,
measures tiled L2 exactly and judges the pair with the copy verdict; the scan's rows must be the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgextract import copies, distance
from imgextract.demo import composites as cp
from imgextract.sources.images import open_rgb

NAMES = ["astronaut", "chelsea", "coffee", "rocket", "camera", "page", "china", "flower", "clock", "logo", "coins",
         "moon", "brick", "grass", "retina", "text"]


def training_set(folder, mixed: bool, rng) -> list:
    folder.mkdir()
    views = []
    for n in NAMES:
        for v in cp.crops(n, 96, 3, rng):
            side = int(rng.choice([64, 96, 128])) if mixed else 96
            h = side if not mixed or rng.random() < 0.5 else side * 3 // 4
            v = v.resize((side, h), Image.BICUBIC)
            v.save(folder / f"{n}-{len(views)}.png")
            views.append(v)
    return views


def plain_loop(gens: list, index, k: int) -> pd.DataFrame:
    embedder = index.load_embedder("cpu")
    paths = index.table["path"].tolist()
    rows = []
    for g in gens:
        im = open_rgb(g)
        _, ids = index.search(embedder.embed([im]), k)
        gen = distance.to_uint8(im)
        for rank, tid in enumerate(ids[0]):
            train = distance.to_uint8(open_rgb(paths[tid]), (im.height, im.width))
            rows.append({"generation_path": str(g), "rank": rank, "train_id": int(tid),
                         "tiled_l2": float(distance.exact_distances(gen, [train])[0][0]),
                         "kind": copies.judge(gen, train).kind})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("k,size,mixed,copy_share", [(5, 64, False, 0.0), (10, 96, True, 0.1), (40, 160, True, 0.5),
                                                     (10, 128, False, 0.5)])
def test_the_scans_rows_are_the_plain_loops_on_every_workload_kind(tmp_path, k, size, mixed, copy_share):
    from imgextract.index.build import build, prepare
    from imgextract.index.settings import BuildSettings
    from imgextract.progress import drain
    from imgextract.stages.scan import ScanParams, scan
    rng = np.random.default_rng(k + size)
    views = training_set(tmp_path / "train", mixed, rng)
    index = drain(build(prepare(tmp_path / "train", str(tmp_path / "idx"), BuildSettings())))
    gens_dir = tmp_path / "gens"
    gens_dir.mkdir()
    gens = []
    n_copies = round(12 * copy_share) if copy_share == 0 else max(1, round(12 * copy_share))
    for i in range(12):
        if i < n_copies:                    # a near-copy of a training image, fitted as a scan fits it (JPEG 85)
            im = cp.jpeg(distance.fit(views[int(rng.integers(len(views)))], (size, size)), 85)
        else:                               # another view of the same photographs: close, but no copy
            im = cp.crops(NAMES[int(rng.integers(len(NAMES)))], size, 2, rng)[1]
        im.save(gens_dir / f"g{i:02d}.png")
        gens.append(gens_dir / f"g{i:02d}.png")
    from imgextract.index.store import open_index
    idx = open_index(index.path)
    drain(scan(gens_dir, ScanParams(index=str(index.path), k=k), tmp_path / "scan", device="cpu", index=idx))
    got = pd.read_parquet(tmp_path / "scan" / "matches.parquet").sort_values(["generation_path", "rank"])
    ref = plain_loop(gens, idx, k).sort_values(["generation_path", "rank"])
    assert len(got) == len(ref) == 12 * k
    assert got["train_id"].tolist() == ref["train_id"].tolist()
    exact = got["exact"].to_numpy()
    assert np.allclose(got["tiled_l2"].to_numpy()[exact], ref["tiled_l2"].to_numpy()[exact], atol=1e-6)
    assert (got["tiled_l2"].to_numpy()[~exact] <= ref["tiled_l2"].to_numpy()[~exact] + 1e-6).all()  # lower bounds
    # the copy verdict: what the loop's judge of every pair finds, the scan finds (templates are the loop's portions)
    found = got["copy_kind"].replace("template", "portion").tolist()
    assert found == ref["kind"].tolist()
    if copy_share:
        assert (ref["kind"] != "none").any()
