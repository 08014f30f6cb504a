"""Hostile data and careless use, through the installed command: every case ends in an `error:` line
with exit 2, or in a listed, skipped item; nothing of the user's is overwritten; an unexpected failure
is `internal error:` with exit 70, never a verdict's code."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import expect_error, first, run


# -- outputs: only into new, empty or imgextract's own folders ----------------------------------------------------

def test_scan_refuses_a_folder_it_did_not_make_and_reuses_its_own(env, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.html").write_text("my own report")
    (theirs / "summary.json").write_text("{}")
    code, _, err = run("scan", env["train"], "--index", "train", "--out", theirs, env_extra=env["ix"])
    expect_error(code, err, str(theirs), "did not make")
    assert (theirs / "report.html").read_text() == "my own report" and (theirs / "summary.json").read_text() == "{}"
    code, _, err = run("scan", env["train"], "--index", "train", "--out", "/", env_extra=env["ix"])
    expect_error(code, err, "--out /")
    ours = tmp_path / "ours"
    code, _, err = run("scan", env["train"], "--index", "train", "--out", ours, env_extra=env["ix"])
    assert code == 0, err
    code, _, err = run("scan", env["train"], "--index", "train", "--out", ours, "-k", "3", env_extra=env["ix"])
    assert code == 0, err   # its own marker: a second scan writes there again


def test_run_refuses_a_foreign_out_before_building_the_index(env, tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    (tmp_path / "captions.txt").write_text("a photograph\n")
    (tmp_path / "audit.toml").write_text(
        f'out = "{theirs}"\n[index]\nsource = "{env["train"]}"\nname = "never-built"\n'
        f'[generate]\ncaptions = "captions.txt"\nmodel = "./nowhere"\n')
    code, _, err = run("run", tmp_path / "audit.toml", env_extra=env["ix"])
    expect_error(code, err, "out", str(theirs), "did not make")
    assert not (env["indexes"] / "never-built").exists()
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]


# -- untrusted metadata and folders ----------------------------------------------------------------------------

def test_a_link_out_of_the_training_folder_is_listed_not_read(env, tmp_path):
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    Image.open(env["train"] / "rocket.png").save(secret)
    train = tmp_path / "train"
    shutil.copytree(env["train"], train)
    (train / "innocent.png").symlink_to(secret)
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, out, err = run("index", "build", train, "--name", "t", env_extra=ix)
    assert code == 0, err
    assert "innocent.png" in err and "a link out of the folder" in err
    table = pd.read_parquet(tmp_path / "ix" / "t" / "images.parquet")
    assert not any("secret" in p or "innocent" in p for p in table["path"])
    code, out, err = run("index", "build", train, "--name", "t2", env_extra={**ix, "IMGEXTRACT_FOLLOW_LINKS": "1"})
    assert code == 0 and "link out" not in err, err  # told to follow


def test_a_file_named_like_a_locator_is_a_file_and_a_forged_locator_is_skipped(env, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    shutil.copy(env["train"] / "rocket.png", train / "holiday::2019.png")
    shutil.copy(env["train"] / "coffee.png", train / "coffee.png")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, out, err = run("index", "build", train, "--name", "f", env_extra=ix)
    assert code == 0 and "indexed 2 images" in out, out + err
    tar = tmp_path / "t.tar"
    tar.write_bytes(b"\0" * 4096)
    pd.DataFrame({"path": [str(env["train"] / "coins.png"), f"{tar}::512+1000000000000"],
                  "caption": ["coins", "forged"]}).to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = run("index", "build", tmp_path / "rows.csv", "--name", "r", env_extra=ix)
    assert code == 0 and "indexed 1 images" in out and "t.tar::512+1000000000000" in err, out + err


def test_a_bad_copies_value_is_refused_at_build(env, tmp_path):
    pd.DataFrame({"path": [str(env["train"] / "coins.png"), str(env["train"] / "rocket.png")],
                  "caption": ["a", "b"], "copies": ["3", "<b>3</b>"]}).to_csv(tmp_path / "rows.csv", index=False)
    code, _, err = run("index", "build", tmp_path / "rows.csv", "--name", "c",
                       env_extra={"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")})
    expect_error(code, err, "copies", "row 2", "<b>3</b>")


def test_non_finite_vectors_are_refused_at_build(tmp_path):
    from imgextract.models.embedders import load_embedder
    emb = tmp_path / "emb"
    (emb / "img_emb").mkdir(parents=True)
    (emb / "metadata").mkdir()
    dim = load_embedder("pixel", "cpu").dim
    vectors = np.random.default_rng(0).normal(size=(6, dim)).astype(np.float16)
    vectors[[1, 4]] = np.nan
    np.save(emb / "img_emb" / "img_emb_0.npy", vectors)
    pd.DataFrame({"caption": [f"c{i}" for i in range(6)]}).to_parquet(emb / "metadata" / "metadata_0.parquet")
    code, _, err = run("index", "build", emb, "--name", "n", "--embeddings", "--embedder", "pixel",
                       env_extra={"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")})
    expect_error(code, err, "img_emb_0.npy", "NaN", "rows 1, 4")


def test_image_paths_in_metadata_resolve_under_their_folder_only(tmp_path, env):
    from imgextract.models.embedders import load_embedder
    emb = tmp_path / "emb"
    (emb / "img_emb").mkdir(parents=True)
    (emb / "metadata").mkdir()
    (emb / "images").mkdir()
    shutil.copy(env["train"] / "coins.png", emb / "images" / "coins.png")
    outside = tmp_path / "outside.png"
    shutil.copy(env["train"] / "rocket.png", outside)
    embedder = load_embedder("pixel", "cpu")
    refs = ["images/coins.png", str(outside), "../outside.png"]
    ims = [Image.open(env["train"] / n).convert("RGB") for n in ("coins.png", "rocket.png", "rocket.png")]
    np.save(emb / "img_emb" / "img_emb_0.npy", embedder.embed(ims).astype(np.float16))
    pd.DataFrame({"image_path": refs, "caption": ["in", "absolute", "dotdot"]}).to_parquet(
        emb / "metadata" / "metadata_0.parquet")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, out, err = run("index", "build", emb, "--name", "m", "--embeddings", "--embedder", "pixel", env_extra=ix)
    assert code == 0 and "image_path outside" in out + err, out + err
    table = pd.read_parquet(tmp_path / "ix" / "m" / "images.parquet")
    assert table["pixels"].tolist() == ["available", "unavailable", "unavailable"]
    assert not any("outside" in p for p in table["path"])


# -- inputs of a run: captions, model folders, config types --------------------------------------------------

def test_a_huge_caption_is_truncated_with_a_note(tiny_pipeline_dir, tmp_path):
    (tmp_path / "captions.txt").write_text("a photograph of a cat\n" + "x" * 3_000_000 + "\n")
    code, _, err = run("generate", tmp_path / "captions.txt", "--model", tiny_pipeline_dir, "--out", tmp_path / "r",
                       "--samples", "1", "--steps", "2", "--size", "32", "32", "--device", "cpu", timeout=600)
    assert code == 0, err
    assert "longer than 2000 characters truncated" in err
    captions = pd.read_parquet(tmp_path / "r" / "captions.parquet")
    assert captions["caption"].str.len().max() == 2000


@pytest.mark.parametrize("damage, words", [
    ("index_list", ["model_index.json", "list"]),
    ("sample_size", ["sample_size = 4096"]),
    ("channels", ["65536"]),
    ("header", ["safetensors header"]),
])
def test_damaged_model_folders_are_refused_before_run_json(tiny_pipeline_dir, tmp_path, damage, words):
    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, model)
    if damage == "index_list":
        (model / "model_index.json").write_text("[1, 2, 3]")
    elif damage in ("sample_size", "channels"):
        cfg = json.loads((model / "unet" / "config.json").read_text())
        if damage == "sample_size":
            cfg["sample_size"] = 4096
        else:
            cfg["block_out_channels"] = [65536] * len(cfg["block_out_channels"])
        (model / "unet" / "config.json").write_text(json.dumps(cfg))
    else:
        weights = next((model / "unet").glob("*.safetensors"))
        data = bytearray(weights.read_bytes())
        data[:8] = (2 ** 40).to_bytes(8, "little")
        weights.write_bytes(bytes(data))
    (tmp_path / "captions.txt").write_text("a photograph\n")
    code, _, err = run("generate", tmp_path / "captions.txt", "--model", model, "--out", tmp_path / "r",
                       "--samples", "1", "--steps", "2")
    expect_error(code, err, *words)
    assert not (tmp_path / "r" / "run.json").exists()


@pytest.mark.parametrize("section, key, value", [
    ("generate", "steps", "1.5"), ("generate", "batch_size", "true"), ("generate", "seed", '"x"'),
    ("generate", "samples", "0"), ("generate", "size", "[64]"), ("generate", "guidance", '"high"'),
    ("scan", "k", '"ten"'), ("scan", "threshold", "[0.1]"), ("cliques", "min_size", "2.5"),
    ("report", "title", "3"), (None, "out", "5"), (None, "keep", "true"),
])
def test_config_values_are_type_checked_before_any_work(env, tmp_path, section, key, value):
    (tmp_path / "captions.txt").write_text("a photograph\n")
    lines = [f'out = "{tmp_path / "out"}"' if key != "out" else f"out = {value}"]
    if section is None and key == "keep":
        lines.append(f"keep = {value}")
    lines += ["[index]", f'source = "{env["train"]}"', 'name = "typed"', "[generate]", 'captions = "captions.txt"',
              'model = "./nowhere"']
    if section == "generate":
        lines.append(f"{key} = {value}")
    elif section is not None:
        lines += [f"[{section}]", f"{key} = {value}"]
    (tmp_path / "audit.toml").write_text("\n".join(lines) + "\n")
    code, _, err = run("run", tmp_path / "audit.toml", env_extra=env["ix"])
    expect_error(code, err, key)
    assert not (tmp_path / "out").exists() and not (env["indexes"] / "typed").exists()


# -- a run folder someone sent: the page escapes every value ---------------------------------------------------

def test_report_from_an_edited_summary_runs_no_script(env, tmp_path):
    out = tmp_path / "s"
    code, _, err = run("scan", env["odd"], "--index", "train", "--out", out, env_extra=env["ix"])
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    summary["generations_scanned"] = "<script>alert(1)</script>"
    (out / "summary.json").write_text(json.dumps(summary))
    code, _, err = run("report", out)
    expect_error(code, err, "generations_scanned", "not a number")
    summary["generations_scanned"] = 3
    summary["per_caption"] = [{"caption_id": "1", "caption": "c", "samples": "<img src=x onerror=alert(1)>",
                               "memorized_samples": 0, "rate": 0.0, "best_tiled_l2": 0.5}]
    (out / "summary.json").write_text(json.dumps(summary))
    code, _, err = run("report", out)
    expect_error(code, err, "per_caption[0].samples")


# -- the environment: a folder made read-only mid-run; the last resort ------------------------------------------

@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_error_line(env, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run("scan", env["train"], "--index", "train", "--out", out, env_extra=env["ix"])
    finally:
        out.chmod(0o755)
    assert code == 2 and first(err).startswith("error: cannot use") and str(out) in first(err), err
    assert "Traceback" not in err


def test_a_folder_turned_read_only_mid_scan_is_one_error_line(env, tmp_path):
    """As root cannot be refused by chmod, the folder turns read-only through a planted hook: once the
    lock is held, every write under it (the lock's holder file included) is refused."""
    out = tmp_path / "s"
    hook = tmp_path / "hook" / "sitecustomize.py"
    hook.parent.mkdir()
    hook.write_text(f"""
import builtins, errno, pathlib
OUT = {str(out)!r}
_open, _unlink = builtins.open, pathlib.Path.unlink
def _refused(path):
    p = str(path)
    return p.startswith(OUT + "/") and ".imgextract" not in p.rsplit("/", 1)[1]
def guarded_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+") and _refused(file) and pathlib.Path(OUT, ".imgextract.lock").exists():
        raise PermissionError(errno.EACCES, "Permission denied", str(file))
    return _open(file, mode, *a, **k)
def guarded_unlink(self, *a, **k):
    if str(self).endswith(".holder.json") and str(self).startswith(OUT):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    return _unlink(self, *a, **k)
builtins.open, pathlib.Path.unlink = guarded_open, guarded_unlink
""")
    code, _, err = run("scan", env["train"], "--index", "train", "--out", out,
                       env_extra={**env["ix"], "PYTHONPATH": str(hook.parent)})
    assert code == 2 and first(err).startswith(f"error: cannot use {out}/") and "permission denied" in first(err), err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error")]) == 1, err


def test_an_unexpected_failure_is_an_internal_error_not_a_verdict(env, tmp_path):
    # a crash planted through the environment: the pixel embedder's module fails to import
    hook = tmp_path / "sitecustomize.py"
    hook.write_text("import imgextract.hashes as h\n"
                    "def boom(*a, **k):\n    raise RuntimeError('planted failure')\n"
                    "h.image_hashes = boom\n")
    code, out, err = run("guard", env["train"] / "rocket.png", "--index", "train",
                         env_extra={**env["ix"], "PYTHONPATH": str(tmp_path)})
    assert code == 70 and code not in (0, 1), (code, err)
    assert first(err).startswith("internal error: RuntimeError: planted failure"), err
    where = first(err).split("traceback is written to ")[1].split(";")[0]
    assert "Traceback" in Path(where).read_text() and "Traceback" not in err
