"""Every registered model family through the commands a user runs, with the command's own defaults.

Each family is its real diffusers pipeline class at toy size (``imgextract.demo.families``), saved with
safetensors and loaded from its folder as a hub checkpoint would be. Sizes are checked against the
folder's own config files (never against what the registry says), schedulers against the pipeline's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import family_audit_config, run

# the six families but SD 1 (the toy model is one: tests/engines, tests/app/test_artist run it through
# every command); flux-dev and pixart-alpha draw in-process (tests/models/test_families.py)
FAMILIES = ("sd2", "sdxl", "sd3", "flux-schnell", "pixart-sigma")
FLOW = {"sd3", "flux-schnell"}
# `check` draws through the same family defaults as `run`: one UNet with two text encoders and one packed flow
# transformer here; SD3's check (with --reconstruct) is in test_families_refusals_cli.py, SD 1's in test_artist.py
CHECKED = {"sdxl", "flux-schnell"}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    from imgextract.demo.families import save_tiny_family
    root = tmp_path_factory.mktemp("families")
    return {f: save_tiny_family(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def family_index(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("family-index")
    (root / "train").mkdir()
    for n in ("astronaut", "coffee", "rocket"):
        photos[n].resize((128, 128)).save(root / "train" / f"{n}.png")
    code, _, err = run("index", "build", root / "train", "--name", root / "ix")
    assert code == 0, err
    return root / "ix"


def native_from_files(folder: Path, family: str) -> tuple[int, int]:
    """The size a checkpoint was trained at, read from its own config files as diffusers' pipelines do."""
    vae = json.loads((folder / "vae" / "config.json").read_text())
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    if family.startswith("flux"):
        side = 128                     # FluxPipeline.default_sample_size
    else:
        denoiser = "unet" if (folder / "unet").is_dir() else "transformer"
        side = json.loads((folder / denoiser / "config.json").read_text())["sample_size"]
    return side * factor, side * factor


def check_run(out: Path, model: Path, family: str) -> tuple[dict, pd.DataFrame]:
    """The run as drawn: the family's scheduler and native size recorded, every PNG at that size, the
    manifest's sha256 the file's."""
    record = json.loads((out / "run.json").read_text())
    assert record["family"] == family
    scheduler = json.loads((model / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    assert record["sampling"]["scheduler"] == scheduler
    assert scheduler.startswith("FlowMatch") == (family in FLOW)
    manifest = pd.concat(pd.read_parquet(p) for p in sorted((out / "samples").glob("shard-*.parquet")))
    assert len(manifest) == 2 and manifest["seed"].nunique() == 2 and set(manifest["scheduler"]) == {scheduler}
    native = native_from_files(model, family)
    for _, row in manifest.iterrows():   # drawn at the native size, never resized
        png = out / row["file"]
        assert Image.open(png).size[::-1] == (row["height"], row["width"]) == native
        assert hashlib.sha256(png.read_bytes()).hexdigest() == row["sha256"]
    return record, manifest


@pytest.mark.parametrize("family", FAMILIES)
def test_run_sample_and_check_work_on_the_family_with_its_defaults(tmp_path, family, family_dirs, family_index,
                                                                   photos):
    model = family_dirs[family]
    code, _, err = run("run", family_audit_config(tmp_path, model, family_index))
    assert code == 0, err
    out = tmp_path / "run"
    record, manifest = check_run(out, model, family)
    assert len(pd.read_parquet(out / "matches.parquet")) >= 2
    assert len(pd.read_parquet(out / "cliques.parquet")) == 1
    assert "imgextract sample --run" in (out / "report.html").read_text()

    # the report's redraw command redraws the sample's bytes (its batch, from the run folder)
    from imgextract.stages.generate import regenerate_command
    row = manifest.iloc[1]
    png = out / row["file"]
    argv = regenerate_command(record, row["caption"], int(row["seed"]), str(png))
    assert argv[:3] == ["imgextract", "sample", "--run"]
    argv[argv.index("--out") + 1] = str(tmp_path / "again.png")
    code, _, err = run(*argv[1:])
    assert code == 0, err
    assert (tmp_path / "again.png").read_bytes() == png.read_bytes()
    if family == "sd3":   # from the model, prompt and seed alone: the same image (a batch moves a transformer's last bits on CPU)
        argv = regenerate_command(record, row["caption"], int(row["seed"]))
        argv[argv.index("--out") + 1] = str(tmp_path / "alone.png")
        code, _, err = run(*argv[1:])
        assert code == 0, err
        alone = np.asarray(Image.open(tmp_path / "alone.png"), dtype=int)
        assert np.abs(alone - np.asarray(Image.open(png), dtype=int)).max() <= 2

    if family not in CHECKED:
        return
    works = tmp_path / "works"
    works.mkdir()
    photos["rocket"].resize((96, 96)).save(works / "rocket.png")
    code, out_text, err = run("check", works, "--model", model, "--samples", "1", "--out", tmp_path / "chk")
    assert code == 0, err
    assert "rocket.png: " in out_text
    drawn = sorted((tmp_path / "chk" / "run" / "samples").rglob("*.png"))
    assert drawn and all(Image.open(p).size[::-1] == native_from_files(model, family) for p in drawn)
