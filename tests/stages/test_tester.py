"""The shard tester: one drawn shard tested in memory, kept by the evidence rule, written manifest last."""

from __future__ import annotations

import numpy as np
import pandas as pd



def test_sweep_shard_flags_a_drawn_watermark_as_the_watermarks_command_does(tmp_path, pixel_index):
    """The test stage's OCR on in-memory samples: same rows as the detector on the files, and a
    marked sample is evidence (kept) while a clean one that matches nothing is not."""
    from imgextract.stages.generate import Drawn, png_bytes
    from imgextract.demo.markdata import draw_mark, font_files
    from imgextract.demo.markdata import photo
    from imgextract.stages.scan import ScanParams
    from imgextract.stages.tester import ShardTester, SweepSettings
    from imgextract.stages.watermarks import Detector
    rng = np.random.default_rng(7)
    images = [draw_mark(photo("flower", 512, rng), "Getty Images", "single", rng, font_files(), opacity=0.7),
              photo("china", 512, rng)]
    drawn = []
    for i, im in enumerate(images):
        meta = {"caption_id": "c0", "caption": "a flower", "sample_index": i, "seed": i, "steps": 1, "guidance": 1.0,
                "scheduler": None, "height": 512, "width": 512}
        drawn.append(Drawn(meta, f"samples/shard-00000/c000000_s{i:05d}.png", png_bytes(im, meta)))
    run_dir = tmp_path / "run"
    settings = SweepSettings(ScanParams(index=str(pixel_index.path), k=3, relative_n=0), None, "evidence",
                             watermarks=(None, None))
    counts = ShardTester(run_dir, settings).finish(0, drawn)
    assert counts == {"shard": 0, "samples": 2, "kept": 1, "memorized": 0}
    marks = pd.read_parquet(run_dir / "watermarks" / "shard-00000.parquet")
    assert marks["watermark"].tolist() == [True, False] and marks["brand"].iat[0] == "Getty Images"
    expected = Detector().detect(images[0])
    assert list(marks["box"].iat[0]) == list(expected["box"]) and marks["text"].iat[0] == expected["text"]
    manifest = pd.read_parquet(run_dir / "samples" / "shard-00000.parquet")
    assert manifest["kept"].tolist() == [True, False]
    assert (run_dir / drawn[0].rel).is_file() and not (run_dir / drawn[1].rel).exists()
