"""The command line's contracts, checked the way a shell, a CI job or a serving pipeline calls it:
the installed console script in a subprocess, its exit code and the first line of its stderr.

Exit codes (README): 0 ok, 1 found (guard), 2 bad input or usage (before any work), 130 interrupted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

EXE = Path(sys.executable).parent / "imgextract"


def run(*args, cwd=None, env_extra=None, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(env_extra or {})}
    p = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def first(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def expect_error(code, err, *words, at_start=True):
    assert code == 2, err
    line = first(err) if at_start else next((ln for ln in err.splitlines() if ln.startswith("error: ")), "")
    assert line.startswith("error: "), err
    assert "Traceback" not in err, err
    for w in words:
        assert w in line, (w, line)
    return line


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG whose header says side×side grey pixels; only the first rows are present (enough to open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = zlib.compress(b"\x00" * ((side + 1) * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def env(tmp_path_factory, photos):
    """A training folder of real photographs, an index of it, and the odd-image corpus."""
    root = tmp_path_factory.mktemp("contracts")
    train = root / "train"
    train.mkdir()
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"]
    for n in names:
        photos[n].resize((96, 96)).save(train / f"{n}.png")
    odd = root / "odd"
    odd.mkdir()
    png = io.BytesIO()
    photos["chelsea"].resize((64, 64)).save(png, "PNG")
    jpg = io.BytesIO()
    photos["coffee"].resize((64, 64)).save(jpg, "JPEG", quality=90)
    (odd / "zero.png").write_bytes(b"")
    (odd / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (odd / "truncated.jpg").write_bytes(jpg.getvalue()[:300])
    (odd / "random.png").write_bytes(np.random.default_rng(0).bytes(2000))
    (odd / "text.png").write_text("this is a text file, not a picture\n")
    bomb_png(odd / "bomb.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(odd / "tiny.png")
    photos["rocket"].resize((64, 64)).convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    grey16 = (np.asarray(photos["camera"].convert("L").resize((64, 64)), np.uint16) * 257)
    Image.fromarray(grey16).save(odd / "grey16.png")
    photos["coins"].convert("L").resize((64, 64)).save(odd / "grey.png")
    pal = photos["astronaut"].resize((64, 64)).convert("P", palette=Image.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(odd / "palette_alpha.png", transparency=0)
    frames = [photos[n].resize((64, 64)).convert("P") for n in ("coffee", "chelsea")]
    frames[0].save(odd / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    # a training image stored rotated, with EXIF saying how to show it upright
    upright = photos["astronaut"].resize((96, 96))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(odd / "rotated.jpg", quality=95, exif=exif)
    (odd / "loop.png").symlink_to(odd / "loop.png")
    unreadable = odd / "unreadable.png"
    photos["coins"].resize((32, 32)).save(unreadable)
    unreadable.chmod(0)
    for name in ("with space.png", "ünïcødé.png", "quote'\"s.png", "<script>alert(1)<b>.png"):
        shutil.copy(train / "rocket.png", odd / name)  # copies of a training image: findings in the report
    indexes = root / "indexes"
    code, out, err = run("index", "build", train, "--name", "train", env_extra={"IMGEXTRACT_INDEX_DIR": str(indexes)})
    assert code == 0, err
    return {"root": root, "train": train, "odd": odd, "indexes": indexes,
            "ix": {"IMGEXTRACT_INDEX_DIR": str(indexes)}}


UNREADABLE_BY_ROOT = os.geteuid() == 0  # root reads chmod-000 files: that case cannot fail there


# -- usage errors: click's message, exit 2, never a traceback -------------------------------------------------

@pytest.mark.parametrize("args, words", [
    ((), "Usage:"),
    (("nosuch",), "No such command"),
    (("guard", "x.png"), "Missing option '--index'"),
    (("guard", "x.png", "--index", "i", "-k", "abc"), "Invalid value for '-k'"),
    (("index", "build", "x", "--name", "y", "--bogus"), "No such option"),
])
def test_usage_errors(args, words):
    code, out, err = run(*args)
    assert code == 2 and "Traceback" not in err + out
    assert words in err + out


# -- guard: 1 when the image replicates a training image, 0 when not, 2 for bad input --------------------------

def test_guard_exit_codes(env, tmp_path, photos):
    copy = tmp_path / "copy.jpg"
    Image.open(env["train"] / "rocket.png").save(copy, quality=90)
    code, out, err = run("guard", copy, "--index", "train", env_extra=env["ix"])
    assert code == 1, err
    assert out.startswith("memorized (regurgitated)") and "rocket.png" in out
    clean = tmp_path / "clean.png"
    photos["flower"].resize((96, 96)).save(clean)
    code, out, err = run("guard", clean, "--index", "train", env_extra=env["ix"])
    assert code == 0 and out.startswith("no substantial replication"), err
    # EXIF orientation is applied where images are opened: the rotated JPEG is the upright astronaut
    code, out, err = run("guard", env["odd"] / "rotated.jpg", "--index", "train", env_extra=env["ix"])
    assert code == 1 and "astronaut.png" in out, out + err


@pytest.mark.parametrize("args, words", [
    (("-k", "0"), ["-k 0"]),
    (("--threshold", "-1"), ["--threshold -1"]),
    (("--origin", "bogus"), ["--origin bogus"]),
])
def test_guard_bad_options(env, args, words):
    code, _, err = run("guard", env["train"] / "rocket.png", "--index", "train", *args, env_extra=env["ix"])
    expect_error(code, err, *words)


@pytest.mark.parametrize("name, words", [
    ("random.png", ["random.png", "cannot read image"]),
    ("zero.png", ["zero.png"]),
    ("bomb.png", ["900,000,000 pixels", "decompression bomb"]),
    ("tiny.png", ["1x1", "too small"]),
    ("loop.png", ["loop.png"]),
])
def test_guard_unreadable_image(env, name, words):
    code, _, err = run("guard", env["odd"] / name, "--index", "train", env_extra=env["ix"])
    expect_error(code, err, *words)


def test_missing_index_lists_the_ones_that_exist(env):
    code, _, err = run("guard", env["train"] / "rocket.png", "--index", "trian", env_extra=env["ix"])
    expect_error(code, err, "trian", "indexes in", "train")


# -- errors before any work ------------------------------------------------------------------------------------

def test_index_build_bad_arguments(env, tmp_path):
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, _, err = run("index", "build", env["train"], "--name", "f", "--factory", "Bogus", env_extra=ix)
    expect_error(code, err, "--factory 'Bogus'", "Flat")
    code, _, err = run("index", "build", env["train"], "--name", "b", "--batch-size", "0", env_extra=ix)
    expect_error(code, err, "--batch-size 0")
    for bad in ("", ".", ".."):
        code, _, err = run("index", "build", env["train"], "--name", bad, "--overwrite", env_extra=ix)
        expect_error(code, err, "names no index")
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run("index", "build", env["train"], "--name", afile, env_extra=ix)
    expect_error(code, err, "names a file")
    for bad in ("30x", "0", "axb", "1x2x3"):
        code, _, err = run("index", "build", env["train"], "--name", "t", "--thumb-size", bad, env_extra=ix)
        expect_error(code, err, f"--thumb-size {bad!r}", "HxW")
    code, _, err = run("index", "build", env["train"], "--name", "t", "--workers", "-1", env_extra=ix)
    expect_error(code, err, "--workers -1")
    assert not (tmp_path / "ix").exists() or not any((tmp_path / "ix").iterdir())


def test_index_build_with_no_readable_image_lists_them(env, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for n in ("zero.png", "random.png", "text.png"):
        shutil.copy(env["odd"] / n, bad / n)
    code, _, err = run("index", "build", bad, "--name", tmp_path / "i")
    line = expect_error(code, err, "no readable image", "3 skipped", at_start=False)  # found only by reading
    listed = err.split(line, 1)[1]
    for n in ("zero.png", "random.png", "text.png"):
        assert n in listed
    assert not (tmp_path / "i").exists()


def test_generate_and_sample_bad_arguments(tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--device", "bogus")
    expect_error(code, err, "--device 'bogus'", "cpu")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--batch-size", "0")
    expect_error(code, err, "--batch-size is 0")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", afile)
    expect_error(code, err, "--out", "is a file")
    assert not (tmp_path / "r").exists() and afile.read_text() == "not a folder"
    code, _, err = run("sample", "--model", tiny_pipeline_dir, "--prompt", "a", "--seed", "1", "--size", "30", "30",
                       "--out", tmp_path / "s.png")
    expect_error(code, err, "--size 30 30")
    code, _, err = run("sample", "--model", tiny_pipeline_dir, "--prompt", "a", "--seed", "1", "--steps", "0",
                       "--out", tmp_path / "s.png")
    expect_error(code, err, "--steps is 0")
    assert not (tmp_path / "s.png").exists()


def test_scan_grid_too_large(env, tmp_path):
    code, _, err = run("scan", env["train"], "--index", "train", "--grid", "100", "--out", tmp_path / "s",
                       env_extra=env["ix"])
    expect_error(code, err, "--grid 100")
    code, _, err = run("scan", env["train"], "--index", "train", "--exact-below", "0", "--out", tmp_path / "s",
                       env_extra=env["ix"])
    expect_error(code, err, "--exact-below 0")
    assert not (tmp_path / "s").exists()


def test_thumbnails_prune_and_say_when_missing(env, tmp_path, photos):
    """`index info` lists the thumbnails; a scan at a size without them still works and says how to add them;
    an index built with --thumb-size for that size prunes there (rows with exact = false)."""
    code, out, _ = run("index", "info", "train", env_extra=env["ix"])
    assert code == 0 and "thumbnails 96x96 (6 images)" in out, out
    gens = tmp_path / "gens"
    gens.mkdir()
    for n in ("astronaut", "clock", "page"):
        photos[n].resize((64, 64)).save(gens / f"{n}.png")
    code, _, err = run("scan", gens, "--index", "train", "-k", "6", "--out", tmp_path / "s1", env_extra=env["ix"])
    assert code == 0 and "no thumbnails for 64x64" in err and "--thumb-size 64x64" in err, err
    m1 = pd.read_parquet(tmp_path / "s1" / "matches.parquet")
    assert m1["exact"].all()
    code, _, err = run("index", "build", env["train"], "--name", "t64", "--thumb-size", "64", env_extra=env["ix"])
    assert code == 0, err
    code, _, err = run("scan", gens, "--index", "t64", "-k", "6", "--out", tmp_path / "s2", env_extra=env["ix"])
    assert code == 0 and "no thumbnails" not in err, err
    m2 = pd.read_parquet(tmp_path / "s2" / "matches.parquet")
    assert (~m2["exact"]).sum() > 0 and m2["memorized"].equals(m1["memorized"])
    assert (m2.loc[~m2["exact"], "tiled_l2"] <= m1.loc[~m2["exact"], "tiled_l2"]).all()


def test_unsafe_weights_are_refused(tmp_path, tiny_pipeline_dir):
    import torch
    from safetensors.torch import load_file
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline_dir, pickled)
    weights = next((pickled / "unet").glob("*.safetensors"))
    torch.save(load_file(str(weights)), pickled / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    code, _, err = run("generate", caps, "--model", pickled, "--out", tmp_path / "r1")
    expect_error(code, err, "refused as unsafe", "diffusion_pytorch_model.bin", "safetensors")
    custom = tmp_path / "custom"
    shutil.copytree(tiny_pipeline_dir, custom)
    index = json.loads((custom / "model_index.json").read_text())
    index["unet"] = ["my_unet", "MyUNet"]
    (custom / "model_index.json").write_text(json.dumps(index))
    (custom / "unet" / "my_unet.py").write_text("import os  # would run on load\n")
    code, _, err = run("generate", caps, "--model", custom, "--out", tmp_path / "r2")
    expect_error(code, err, "refused as unsafe", "custom code")
    clip_pickle = tmp_path / "clip.pt"
    torch.save({"w": torch.zeros(2)}, clip_pickle)
    code, _, err = run("index", "build", tmp_path, "--name", tmp_path / "ci", "--embedder", f"clip:{clip_pickle}")
    expect_error(code, err, "refused as unsafe", "clip.pt")
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "ci"))


# -- caption tables --------------------------------------------------------------------------------------------

def _caption_cases(tmp_path: Path) -> list:
    latin_txt = tmp_path / "latin.txt"
    latin_txt.write_bytes("a café at night\n".encode("latin-1"))
    latin_csv = tmp_path / "latin.csv"
    latin_csv.write_bytes("caption\ncafé au lait\n".encode("latin-1"))
    copies = tmp_path / "copies.csv"
    copies.write_text("caption,copies\na cat,3\na dog,many\n")
    lists = tmp_path / "lists.jsonl"
    lists.write_text('{"caption": ["a", "b"]}\n{"caption": ["c"]}\n')
    null_ids = tmp_path / "ids.csv"
    null_ids.write_text("id,caption\n1,a cat\n,a dog\n")
    quote = tmp_path / "quote.csv"
    quote.write_text('caption\n"a cat\na dog\na fish\n')
    return [(latin_txt, ["latin.txt", "not UTF-8", "line 1"]), (latin_csv, ["latin.csv", "not UTF-8"]),
            (copies, ["copies.csv", "row 2", "'many'"]), (lists, ["lists.jsonl", "lists", "row 1"]),
            (null_ids, ["ids.csv", "row 2"]), (quote, ["quote.csv"])]


def test_bad_caption_tables(tmp_path, tiny_pipeline_dir):
    for path, words in _caption_cases(tmp_path):
        code, _, err = run("generate", path, "--model", tiny_pipeline_dir, "--out", tmp_path / "r")
        expect_error(code, err, *words)
        assert not (tmp_path / "r").exists()


def test_empty_captions_are_counted(tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "c.csv"
    caps.write_text('caption\na red square\n""\n   \na blue circle\n')
    code, out, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--samples", "1",
                         "--steps", "1", "--size", "32", "32")
    assert code == 0, err
    assert first(err) == f"warning: {caps}: skipped 2 empty caption(s) (rows 2, 3)"
    assert pd.read_parquet(tmp_path / "r" / "captions.parquet")["caption"].tolist() == ["a red square", "a blue circle"]


# -- every odd image: read right, or listed and skipped --------------------------------------------------------

def test_odd_images_through_index_scan_watermarks_and_report(env, tmp_path):
    from imgextract.sources import open_rgb
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, out, err = run("index", "build", env["odd"], "--name", "odd", env_extra=ix)
    assert code == 0, err
    skipped = {ln.split(" ")[3].split("/")[-1].rstrip(":") for ln in err.splitlines()
               if ln.startswith("skipped unreadable image")}
    expected = {"zero.png", "truncated.png", "truncated.jpg", "random.png", "text.png", "bomb.png", "loop.png"}
    assert expected <= skipped, err
    assert "900,000,000 pixels is over" in err and "symlink loop or broken link" in err or "loop.png" in err
    table = pd.read_parquet(tmp_path / "ix" / "odd" / "images.parquet")
    indexed = {Path(p).name for p in table["path"]}
    for name in ("cmyk.jpg", "grey16.png", "grey.png", "palette_alpha.png", "animated.gif", "rotated.jpg",
                 "with space.png", "ünïcødé.png", "quote'\"s.png", "<script>alert(1)<b>.png", "tiny.png"):
        assert name in indexed, name
    # 16-bit grey is scaled, not clipped: it equals the 8-bit photograph it was made from
    grey16 = np.asarray(open_rgb(env["odd"] / "grey16.png"))[..., 0].astype(int)
    grey8 = np.asarray(open_rgb(env["odd"] / "grey.png"))  # (other photo) just a sanity read
    assert grey8.shape == (64, 64, 3)
    assert (grey16 == 255).mean() < 0.05 and abs(grey16.mean() - 255 * 0.5) < 100

    scan_out = tmp_path / "scan"
    code, out, err = run("scan", env["odd"], "--index", "train", "--out", scan_out, env_extra=env["ix"])
    assert code == 0, err
    assert "tiny.png: 1x1 pixels is too small" in err and "bomb.png" in err and "loop.png" in err
    summary = json.loads((scan_out / "summary.json").read_text())
    assert summary["generations_scanned"] == len(indexed) - 1  # all but the 1×1
    code, out, err = run("report", scan_out)
    assert code == 0, err
    page = (scan_out / "report.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page

    code, out, err = run("watermarks", env["odd"], "--out", tmp_path / "wm")
    assert code == 0, err
    marks = pd.read_parquet(tmp_path / "wm" / "watermarks.parquet")
    errs = dict(zip(marks["path"].map(lambda p: Path(p).name), marks["error"]))
    assert errs["loop.png"] and errs["bomb.png"] and errs["zero.png"] and pd.isna(errs["cmyk.jpg"])


def test_unreadable_file_is_listed(env, tmp_path):
    if UNREADABLE_BY_ROOT:
        pytest.skip("running as root: a chmod-000 file is still readable")
    code, _, err = run("guard", env["odd"] / "unreadable.png", "--index", "train", env_extra=env["ix"])
    expect_error(code, err, "unreadable.png", "ermission")


def test_check_lists_unreadable_works(tmp_path, tiny_pipeline_dir, photos):
    works = tmp_path / "works"
    works.mkdir()
    photos["chelsea"].resize((32, 32)).save(works / "cat.png")
    (works / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, err = run("check", works, "--model", tiny_pipeline_dir, "--samples", "1", "--steps", "1",
                         "--out", tmp_path / "c")
    assert code == 0, err
    assert "broken.png: unreadable:" in out and "not reproduced" not in out.split("broken.png:")[1].splitlines()[0]
    assert "cat.png: " in out


# -- never delete what the tool did not create -----------------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_an_index(env, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(env["train"], work / "train")
    before = tree_digest(work / "train")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    # a bare name resolves under the index root, never to ./train
    code, out, err = run("index", "build", "./train", "--name", "train", "--overwrite", cwd=work, env_extra=ix)
    assert code == 0, err
    assert (tmp_path / "ix" / "train" / "embedder.json").is_file() and tree_digest(work / "train") == before
    # a path to a folder that is not an index: refused, byte for byte intact
    code, _, err = run("index", "build", work / "train", "--name", work / "train", "--overwrite", env_extra=ix)
    expect_error(code, err, "is not an imgextract index", "refusing")
    assert tree_digest(work / "train") == before
    # an index is replaced
    code, out, err = run("index", "build", work / "train", "--name", "train", "--overwrite", env_extra=ix)
    assert code == 0, err


def test_check_out_with_a_foreign_index_folder(tmp_path, tiny_pipeline_dir, photos):
    works = tmp_path / "works"
    works.mkdir()
    photos["chelsea"].resize((32, 32)).save(works / "cat.png")
    foreign = tmp_path / "c" / "index"
    foreign.mkdir(parents=True)
    (foreign / "my-notes.txt").write_text("mine")
    code, _, err = run("check", works, "--model", tiny_pipeline_dir, "--samples", "1", "--steps", "1",
                       "--out", tmp_path / "c")
    expect_error(code, err, "not an imgextract index")
    assert (foreign / "my-notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_toy_train_refuses_a_foreign_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "essay.txt").write_text("do not touch")
    code, _, err = run("toy", "train", "--out", mine, "--vae-steps", "1", "--unet-steps", "1")
    expect_error(code, err, "not a toy model's")
    assert [p.name for p in mine.iterdir()] == ["essay.txt"]


# -- one run, one writer ---------------------------------------------------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from imgextract.locks import exclusive
with exclusive(Path(sys.argv[1]), "x"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(lock: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_and_a_dead_holder_is_taken_over(env, tmp_path, tiny_pipeline_dir):
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    holder = _holder(tmp_path / "ix" / ".busy.lock")
    try:
        code, _, err = run("index", "build", env["train"], "--name", "busy", env_extra=ix)
        expect_error(code, err, "being written by another imgextract", f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run("index", "build", env["train"], "--name", "busy", env_extra=ix)  # stale lock: taken over
    assert code == 0, err

    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    run_dir = tmp_path / "run"
    holder = _holder(run_dir / ".imgextract.lock")
    try:
        code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", run_dir, "--samples", "1",
                           "--steps", "1", "--size", "32", "32")
        expect_error(code, err, "run folder", "being written by another imgextract", f"pid {holder.pid}")
        assert not (run_dir / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_two_concurrent_index_builds(env, tmp_path):
    ix = {**os.environ, "IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "TQDM_DISABLE": "1"}
    procs = [subprocess.Popen([str(EXE), "index", "build", str(env["train"]), "--name", "same"], env=ix,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    refused = next(e for c, e in results if c == 2)
    assert "being written by another imgextract" in refused or "already exists" in refused
    from imgextract.index import open_index
    assert len(open_index(tmp_path / "ix" / "same").table) == 6


# -- scanning a plain folder resumes by file -------------------------------------------------------------------

def test_folder_scan_resumes_by_file(env, tmp_path, monkeypatch, photos):
    from imgextract import scan as scan_mod
    from imgextract.index import open_index
    gens = tmp_path / "gens"
    gens.mkdir()
    for n in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.open(env["train"] / f"{n}.png").save(gens / f"{n}.jpg", quality=90)
    out = tmp_path / "out"
    # an interrupted scan: two files per shard, stopped after the first shard
    monkeypatch.setattr(scan_mod, "FOLDER_SHARD", 2)
    params = scan_mod.ScanParams(index=str(env["indexes"] / "train"), k=3, relative_n=0)
    steps = scan_mod.scan(gens, params, out, index=open_index(env["indexes"] / "train"))
    while next(steps) != (1, 2):
        pass
    steps.close()
    monkeypatch.undo()
    (gens / "rocket.jpg").unlink()                                  # vanished
    for n in ("camera", "coins"):                                   # added
        Image.open(env["train"] / f"{n}.png").save(gens / f"{n}.jpg", quality=90)
    photos["flower"].resize((96, 96)).save(gens / "flower.png")
    code, out_text, err = run("scan", gens, "--index", "train", "-k", "3", "--relative-n", "0", "--out", out,
                              env_extra=env["ix"])
    assert code == 0, err
    assert first(err).startswith("resuming: 2 file(s) already scanned, 4 new, 0 changed (rescanned), 0 gone")
    m = pd.read_parquet(out / "matches.parquet")
    names = sorted({Path(p).name for p in m["generation_path"]})
    assert names == ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "coffee.jpg", "coins.jpg", "flower.png"]
    assert len(m) == 6 * 3 and m.groupby("generation_path").size().eq(3).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generations_scanned"] == 6 and summary["memorized_generations"] == 5
    # a second run: nothing new; then a file changes and another goes
    Image.open(env["train"] / "rocket.png").save(gens / "coffee.jpg", quality=90)
    (gens / "flower.png").unlink()
    code, _, err = run("scan", gens, "--index", "train", "-k", "3", "--relative-n", "0", "--out", out,
                       env_extra=env["ix"])
    assert code == 0, err
    assert "5 file(s) already scanned" not in err and "1 changed (rescanned), 1 gone" in first(err)
    m = pd.read_parquet(out / "matches.parquet")
    assert len(m) == 5 * 3
    best = m[m["rank"] == 0].set_index(m[m["rank"] == 0]["generation_path"].map(lambda p: Path(p).name))
    assert best.loc["coffee.jpg", "train_path"].endswith("rocket.png")


def test_scan_of_an_unfinished_run_says_so(tmp_path, tiny_pipeline_dir, env):
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\na dog\n")
    run_dir = tmp_path / "run"
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", run_dir, "--samples", "2",
                       "--steps", "1", "--size", "32", "32", "--shard-size", "2")
    assert code == 0, err
    (run_dir / "samples" / "shard-00001.parquet").unlink()          # as if generate were still drawing it
    code, out, err = run("scan", run_dir, "--index", "train", "-k", "2", env_extra=env["ix"])
    assert code == 0, err
    assert "run" in first(err) and "is incomplete: 1 of 2 shards generated" in first(err)
    assert "incomplete run: 1 of 2 shards" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is False and summary["incomplete"] == {"shards_finished": 1, "shards_planned": 2}
    # 2 samples per caption can never make a clique of 10: said, not "0 of 2 flagged"
    code, _, err = run("cliques", run_dir, "--min-size", "10")
    expect_error(code, err, "2 samples per caption, fewer than --min-size 10", "no caption could be flagged")


# -- Ctrl-C ----------------------------------------------------------------------------------------------------

def test_ctrl_c_during_generate(tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "c.txt"
    caps.write_text("\n".join(f"caption {i}" for i in range(40)) + "\n")
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    p = subprocess.Popen([str(EXE), "generate", str(caps), "--model", str(tiny_pipeline_dir), "--out", str(run_dir),
                          "--samples", "8", "--steps", "4", "--size", "32", "32", "--shard-size", "8",
                          "--batch-size", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "samples").glob("shard-00000.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=60)
    err = p.stderr.read()
    assert code == 130, err
    assert first(err).startswith("interrupted: finished shards are kept") or "interrupted:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, words", [
    (("triage", "{tmp}/missing.txt", "--model", "{tmp}/m", "--out", "{tmp}/t.parquet"), ["missing.txt", "does not exist"]),
    (("compare", "{tmp}/a", "{tmp}/b", "--out", "{tmp}/c"), ["{tmp}/a"]),
    (("run", "{tmp}/audit.toml"), ["audit.toml", "does not exist"]),
    (("report", "{tmp}"), ["matches.parquet"]),
    (("index", "info", "nosuch"), ["nosuch", "not found"]),
    (("index", "search", "nosuch", "{tmp}/x.png"), ["nosuch", "not found"]),
    (("watermarks", "{tmp}/nofolder"), ["nofolder"]),
    (("cliques", "{tmp}"), ["not a run folder"]),
])
def test_every_command_refuses_bad_input_with_exit_2(tmp_path, args, words):
    fill = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run(*fill, env_extra={"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")})
    expect_error(code, err, *[w.replace("{tmp}", str(tmp_path)) for w in words])
