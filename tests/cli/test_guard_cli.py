"""`imgextract guard`: 1 when the image replicates a training image, 0 when not, 2 for bad input."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from helpers import expect_error, run


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


UNREADABLE_BY_ROOT = os.geteuid() == 0  # root reads chmod-000 files: that case cannot fail there


def test_unreadable_file_is_listed(env, tmp_path):
    if UNREADABLE_BY_ROOT:
        pytest.skip("running as root: a chmod-000 file is still readable")
    code, _, err = run("guard", env["odd"] / "unreadable.png", "--index", "train", env_extra=env["ix"])
    expect_error(code, err, "unreadable.png", "ermission")
