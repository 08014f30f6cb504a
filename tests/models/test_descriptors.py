"""SSCD as a descriptor: the release converted once, stored per training image, reported per candidate.

The official release cannot be downloaded here, so the tests script a module in the release's
layout (a ResNet-50 ``backbone`` returning the feature map, then ``embeddings`` = GeM, a 2048 → 512
linear layer and an L2 norm) with random weights, export it with ``torch.jit.script`` and take it
through the same command a user runs on the real file.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import expect_error, run

NAMES = ["astronaut", "coffee", "chelsea", "rocket"]


class _GeM(nn.Module):
    def forward(self, x):
        return x.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1.0 / 3.0)


class _L2(nn.Module):
    def forward(self, x):
        return nn.functional.normalize(x, dim=1)


class ReleaseLayout(nn.Module):
    """What the authors' TorchScript holds, written here independently of imgextract's model."""

    def __init__(self, trunk):
        super().__init__()
        self.backbone = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2,
                                      trunk.layer3, trunk.layer4)
        self.embeddings = nn.Sequential(_GeM(), nn.Linear(trunk.fc.in_features, 512), _L2())

    def forward(self, x):
        return self.embeddings(self.backbone(x))


def _scripted(trunk, path):
    torch.manual_seed(3)
    model = ReleaseLayout(trunk).eval()
    for m in model.modules():   # trained-looking batch-norm statistics, so a mis-paired tensor shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.0)
            m.bias.data.uniform_(-0.1, 0.1)
    scripted = torch.jit.script(model)
    scripted.save(str(path))
    return scripted


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from torchvision.models import resnet50
    path = tmp_path_factory.mktemp("sscd") / "sscd_disc_mixup.torchscript.pt"
    return path, _scripted(resnet50(weights=None), path)


@pytest.fixture(scope="module")
def sscd_file(release):
    out = release[0].with_name("sscd.safetensors")
    code, stdout, err = run("convert", "sscd", release[0], out)
    assert code == 0, err
    assert f"sscd:{out}" in stdout
    return out


def test_convert_round_trips_the_release_to_equal_descriptors(release, sscd_file, photos):
    from imgextract.models.descriptors import load_descriptor
    d = load_descriptor(f"sscd:{sscd_file}", "cpu")
    images = [photos[n] for n in NAMES]
    ours = d.embed(images)
    with torch.no_grad():
        theirs = release[1](d.tensors(images)).numpy()
    assert ours.shape == (4, 512)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    # weights that differ give other descriptors: the comparison above can fail
    state = d.model.state_dict()
    state["net.fc.weight"] = state["net.fc.weight"].flip(0)
    d.model.load_state_dict(state)
    assert np.abs(d.embed(images) - theirs).max() > 1e-3


def test_convert_refuses_other_files_and_existing_outputs(release, sscd_file, tmp_path):
    from torchvision.models import resnet18
    other = tmp_path / "resnet18.torchscript.pt"
    _scripted(resnet18(weights=None), other)
    code, _, err = run("convert", "sscd", other, tmp_path / "o.safetensors")
    expect_error(code, err, str(other), "is not SSCD's ResNet-50")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    code, _, err = run("convert", "sscd", garbage, tmp_path / "o.safetensors")
    expect_error(code, err, "not a TorchScript archive")
    before = sscd_file.read_bytes()
    code, _, err = run("convert", "sscd", release[0], sscd_file)
    expect_error(code, err, "already exists")
    assert sscd_file.read_bytes() == before
    assert not (tmp_path / "o.safetensors").exists()


@pytest.fixture(scope="module")
def described(tmp_path_factory, photos, sscd_file):
    root = tmp_path_factory.mktemp("described")
    train, gens = root / "train", root / "gens"
    train.mkdir()
    gens.mkdir()
    for n in NAMES:
        photos[n].resize((96, 96)).save(train / f"{n}.png")
    shutil.copy(train / "astronaut.png", gens / "copy-astronaut.png")
    Image.open(train / "coffee.png").save(gens / "jpeg-coffee.jpg", quality=85)
    photos["moon"].convert("RGB").resize((96, 96)).save(gens / "moon.png")
    ix = {"IMGEXTRACT_INDEX_DIR": str(root / "ix")}
    code, _, err = run("index", "build", train, "--name", "sscd-ix", "--descriptor", f"sscd:{sscd_file}", env_extra=ix)
    assert code == 0, err
    code, _, err = run("index", "build", train, "--name", "plain-ix", env_extra=ix)
    assert code == 0, err
    return {"root": root, "train": train, "gens": gens, "ix": ix}


def test_scan_with_a_descriptor_writes_each_candidates_similarity(described, sscd_file):
    from imgextract.models.descriptors import load_descriptor
    d = described
    out = d["root"] / "scan"
    code, _, err = run("scan", d["gens"], "--index", "sscd-ix", "--out", out, "-k", "3", "--descriptor",
                       f"sscd:{sscd_file}", env_extra=d["ix"])
    assert code == 0, err
    m = pd.read_parquet(out / "matches.parquet")
    assert "sscd_similarity" in m.columns and m["sscd_similarity"].notna().all()
    assert len(m) == 3 * 3
    desc = load_descriptor(f"sscd:{sscd_file}", "cpu")
    for _, row in m.iterrows():   # the stored training descriptor against the generation's, as computed here
        a, b = desc.embed([Image.open(row["generation_path"]), Image.open(row["train_path"])])
        assert row["sscd_similarity"] == pytest.approx(float(a @ b), abs=2e-3)
    summary = json.loads((out / "summary.json").read_text())
    best = m.groupby("generation_path")["sscd_similarity"].max()
    assert summary["sscd"]["generations"] == 3
    for t in ("0.5", "0.7"):
        assert summary["sscd"][f"over_{t}"]["generations"] == int((best > float(t)).sum())
    assert summary["parameters"]["descriptor"] == f"sscd:{sscd_file.resolve()}"
    stored = json.loads((d["root"] / "ix" / "sscd-ix" / "embedder.json").read_text())["descriptors"]["sscd"]
    assert stored["dimension"] == 512 and stored["weights_fingerprint"] == desc.record()["weights_fingerprint"]


def test_a_descriptor_the_index_lacks_is_refused_before_any_work(described, sscd_file, release):
    d = described
    out = d["root"] / "refused"
    code, _, err = run("scan", d["gens"], "--index", "plain-ix", "--out", out, "--descriptor", f"sscd:{sscd_file}",
                       env_extra=d["ix"])
    line = expect_error(code, err, "built without the sscd descriptor")
    assert "--descriptor sscd:" in line and "--overwrite" in line
    code, _, err = run("scan", d["gens"], "--index", "sscd-ix", "--out", out, "--descriptor", f"sscd:{release[0]}",
                       env_extra=d["ix"])
    expect_error(code, err, "pickle", "imgextract convert sscd")
    huge = d["root"] / "huge.safetensors"
    with open(huge, "wb") as f:   # sparse: no disk used, yet over any SSCD model's size
        f.truncate(3 << 30)
    code, _, err = run("scan", d["gens"], "--index", "sscd-ix", "--out", out, "--descriptor", f"sscd:{huge}",
                       env_extra=d["ix"])
    expect_error(code, err, "bytes, over the")
    huge.unlink()
    code, _, err = run("guard", d["gens"] / "moon.png", "--index", "plain-ix", "--descriptor", f"sscd:{sscd_file}",
                       env_extra=d["ix"])
    expect_error(code, err, "built without the sscd descriptor")
    assert not out.exists()


def test_guard_reports_the_copys_sscd_similarity(described, sscd_file):
    d = described
    code, stdout, err = run("guard", d["gens"] / "copy-astronaut.png", "--index", "sscd-ix", "--descriptor",
                            f"sscd:{sscd_file}", env_extra=d["ix"])
    assert code == 1, err
    assert "astronaut.png" in stdout and "SSCD similarity 1.000" in stdout


def test_run_and_check_carry_the_descriptor(described, sscd_file, tiny_pipeline_dir, tmp_path):
    d = described
    shutil.copy(sscd_file, tmp_path / "sscd.safetensors")   # named in the config relative to the file
    (tmp_path / "caps.csv").write_text(f"caption,file\nan astronaut,{d['train'] / 'astronaut.png'}\n")
    cfg = tmp_path / "audit.toml"
    cfg.write_text(f"""
out = "run"
[index]
source = "{d['train']}"
name = "{tmp_path / 'index'}"
[generate]
captions = "caps.csv"
model = "{tiny_pipeline_dir}"
samples = 2
steps = 1
device = "cpu"
[scan]
k = 2
descriptor = "sscd:sscd.safetensors"
""")
    code, _, err = run("run", cfg)
    assert code == 0, err
    m = pd.read_parquet(tmp_path / "run" / "matches.parquet")
    assert len(m) == 2 * 2 and m["sscd_similarity"].between(-1.001, 1.001).all()
    assert json.loads((tmp_path / "index" / "embedder.json").read_text())["descriptors"]["sscd"]["dimension"] == 512
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sscd"]["generations"] == 2
    code, out, err = run("report", tmp_path / "run", "--paper")
    assert code == 0, err
    assert "generations over SSCD 0.7" in out and "not measured" not in out
    code, out, err = run("check", d["train"] / "coffee.png", "--model", tiny_pipeline_dir, "--samples", "1",
                         "--steps", "1", "--out", tmp_path / "c", "--descriptor", f"sscd:{sscd_file}")
    assert code == 0, err
    work = json.loads((tmp_path / "c" / "check.json").read_text())["works"][0]
    m = pd.read_parquet(tmp_path / "c" / "run" / "matches.parquet")
    assert work["sscd_similarity"] == pytest.approx(float(m["sscd_similarity"].max()))
