"""Webster's templates folder (metadata.parquet: url, img_file, mask_file) read as a source: each template with
its mask, paths kept inside the folder, a bad row listed with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from imgextract.sources import plan_source
from imgextract.sources.templates import detect, list_templates


def write_folder(root, rows):
    root.mkdir(exist_ok=True)
    for name in ("t0.png", "t1.png", "m0.png", "m1.png"):
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(root / name)
    pd.DataFrame(rows).to_parquet(root / "metadata.parquet")
    return root


def test_a_templates_folder_is_its_own_form_and_each_row_keeps_its_mask_and_url(tmp_path):
    root = write_folder(tmp_path / "templates", {"url": ["https://a/0.jpg", "https://a/1.jpg"],
                                                  "img_file": ["t0.png", "t1.png"], "mask_file": ["m0.png", "m1.png"]})
    plan = plan_source(root)
    assert plan.kind == "templates" and sum(p.size for p in plan.parts) == 2 and "2 templates" in plan.notes[0]
    records, _ = plan.parts[0].load()
    assert [r.path.name for r in records] == ["t0.png", "t1.png"]
    assert [r.mask.name for r in records] == ["m0.png", "m1.png"] and all(r.problem is None for r in records)
    assert records[1].extra == {"url": "https://a/1.jpg", "template_mask": "m1.png"}


def test_rows_naming_files_outside_the_folder_or_missing_are_listed_not_opened(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    root = write_folder(tmp_path / "templates", {
        "url": ["u0", "u1", "u2", "u3", "u4"],
        "img_file": ["t0.png", "../secret.png", "t1.png", "gone.png", None],
        "mask_file": ["m0.png", "m1.png", str(tmp_path / "secret.png"), "m1.png", "m1.png"]})
    records = list_templates(root, root / "metadata.parquet")
    problems = [r.problem for r in records]
    assert problems[0] is None and records[0].mask is not None
    assert "outside" in problems[1] and "row 2" in problems[1] and records[1].mask is None
    assert "outside" in problems[2] and "row 3" in problems[2]
    assert "does not exist" in problems[3] and "gone.png" in problems[3]
    assert "names no img_file" in problems[4]
    assert all(tmp_path / "secret.png" not in (r.path, r.mask) for r in records[1:])


def test_a_metadata_file_without_images_and_masks_leaves_a_plain_folder(tmp_path):
    root = write_folder(tmp_path / "plain", {"url": ["u"], "caption": ["c"]})
    assert detect(root) is None and plan_source(root).kind == "folder"
    (root / "metadata.parquet").write_text("not parquet")
    assert detect(root) is None and plan_source(root).kind == "folder"
