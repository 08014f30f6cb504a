"""The command line's contracts, checked the way a shell, a CI job or a serving pipeline calls it:
the installed console script in a subprocess, its exit code and the first line of its stderr.

Exit codes (docs/errors.md): 0 ok, 1 found (guard), 2 bad input or usage (before any work), 70 internal error, 130
interrupted.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import bomb_png, run


@pytest.fixture(scope="session")
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

