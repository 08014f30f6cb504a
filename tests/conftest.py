"""Shared fixtures: real photographs that ship offline, and tiny models built once per session."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from imgextract.demo.photos import photo

from helpers import Quiet, shared_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# the tests serve URL tables from 127.0.0.1, a private address imgextract refuses by default
os.environ.setdefault("IMGEXTRACT_ALLOW_PRIVATE_URLS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one thread each (and in the commands they start), not two OpenMP teams
    # spinning against each other; set OMP_NUM_THREADS yourself to choose otherwise
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "immunohistochemistry",
          "hubble_deep_field", "retina", "colorwheel", "clock", "page", "text"]


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {n: photo(n) for n in PHOTOS + ["china", "flower"]}


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory, photos) -> Path:
    """Ten distinct real photographs at 128×128 with sidecar captions, plus one corrupt file."""
    d = tmp_path_factory.mktemp("train")
    for name in PHOTOS[:10]:
        im = photos[name]
        s = min(im.size)
        im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2)) \
          .resize((128, 128), Image.LANCZOS).save(d / f"{name}.png")
        (d / f"{name}.txt").write_text(f"a photograph of {name}")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return d


@pytest.fixture(scope="session")
def index_root(tmp_path_factory, monkeypatch_session) -> Path:
    root = tmp_path_factory.mktemp("indexes")
    monkeypatch_session.setenv("IMGEXTRACT_INDEX_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="session")
def pixel_index(train_dir, index_root):
    from imgextract.app.commands import build_index
    return build_index(train_dir, "train-pixel", "pixel", progress=False)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from imgextract.demo.tiny import save_tiny_pipeline
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_pipeline_dir):
    from imgextract.models.pipelines import load_pipeline
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


def _toy(tmp_path_factory, name: str, **config):
    """Trained once per test run, whichever worker asks first; the others wait for it (train() returns at once
    on a finished folder of the same config)."""
    from filelock import FileLock

    from imgextract.demo.toy import ToyConfig, train
    out = shared_dir(tmp_path_factory) / "toys" / name
    out.parent.mkdir(exist_ok=True)
    cfg = ToyConfig(seed=0, **config)
    with FileLock(str(out) + ".lock"):
        list(train(out, cfg))
    return out, cfg


@pytest.fixture(scope="session")
def memorizing_model(tmp_path_factory):
    """A toy model trained for fixed steps on one image 60 times among 5 singletons. 300 steps (450 before): its
    duplicated caption drew the image in 16 of 16 samples (tiled L2 at most 0.088), the singletons' captions in
    none (0.275 and more), as at 450."""
    return _toy(tmp_path_factory, "model", duplicates="60x1,1x5", vae_steps=300, unet_steps=300)


@pytest.fixture(scope="session")
def memorizing_dit(tmp_path_factory):
    """The transformer toy (SD3's MMDiT, rectified flow) trained for fixed steps on one image 60 times among 5
    singletons. 300 steps: its duplicated caption drew the image in 4 of 4 samples (test_toy_models), at
    two thirds of 450 steps' time."""
    return _toy(tmp_path_factory, "dit", duplicates="60x1,1x5", vae_steps=300, unet_steps=DIT_STEPS, arch="dit")


DIT_STEPS = 300


@pytest.fixture(scope="session")
def plain_model(tmp_path_factory):
    """Six images once each, each drawn as often as the memorizing model's singletons
    (300 steps x 16 / 65 images ~ 74 draws; 28 steps x 16 / 6 ~ 75): a model without a duplicated
    image. (150 steps gave ~400 draws per image and verdicts at tiled L2 0.142-0.146, on the threshold.)"""
    return _toy(tmp_path_factory, "plain", duplicates="1x6", vae_steps=100, unet_steps=28)


# Tests run on two pytest-xdist workers, a module's tests together (`make test`: -n 2 --dist loadfile; the
# toys (under a file lock) and the engine tests' sweeps (helpers.once) are made once per run, by whichever
# worker asks first).
# The modules go out in this order (--no-loadscope-reorder): the memorizing toy's first user (the run's
# critical path) on one worker while the other trains the transformer toy, then long modules that need no toy.
FIRST = ["engines/test_local.py", "demo/test_toy_models.py", "sources/test_clip_retrieval.py", "cli/test_triage_eval_cli.py",
         "sources/test_fetch_hostile.py", "app/test_artist.py", "engines/test_ray.py"]


def pytest_collection_modifyitems(items):
    rank = {g: i for i, g in enumerate(FIRST)}
    here = Path(__file__).parent
    items.sort(key=lambda item: rank.get(Path(str(item.path)).relative_to(here).as_posix(), len(FIRST)))


def pytest_terminal_summary(terminalreporter):
    """Browser checks that could not run are said loudly, not folded into the skip count."""
    import browser
    skipped = [r.nodeid for r in terminalreporter.stats.get("skipped", []) if browser.REASON in str(r.longrepr)]
    if skipped or browser.MISSED:
        terminalreporter.section("BROWSER CHECKS DID NOT RUN", sep="!", red=True, bold=True)
        for name in skipped + [f"page {p}" for p in browser.MISSED]:
            terminalreporter.line(f"not checked in a browser: {name}", red=True)
        terminalreporter.line(browser.REASON, red=True)


# -- LAION's form: photographs behind a URL table, for img2dataset ---------------------------------

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "china", "flower"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, photos):
    """The photographs as 96 px JPEG files behind http://127.0.0.1:PORT/, with a URL table
    (caption, LICENSE, similarity) that also names one missing file (a 404)."""
    root = tmp_path_factory.mktemp("i2d")
    www = root / "www"
    www.mkdir()
    for n in NAMES:
        photos[n].resize((96, 96)).save(www / f"{n}.jpg", quality=92)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    rows = [{"url": f"{base}/{n}.jpg", "caption": f"a photograph of {n}", "LICENSE": f"cc-by-{i}",
             "similarity": 0.3} for i, n in enumerate(NAMES)]
    rows.insert(3, {"url": f"{base}/missing.jpg", "caption": "gone", "LICENSE": "?", "similarity": 0.1})
    pd.DataFrame(rows).to_parquet(root / "urls.parquet")
    yield {"root": root, "www": www, "base": base, "rows": rows}
    httpd.shutdown()



@pytest.fixture(scope="session")
def member_model(tmp_path_factory):
    """Membership's toy: twelve distinct images, two of them 6 times, 400 steps at batch 8 (about 90 s on one core).
    Measured (scripts/bench_membership.py): its works against never_seen give p <= 5e-4 on ten split seeds, its
    two 6x images score highest, and at 20x the ten singletons were too little trained to tell (p 0.02)."""
    return _toy(tmp_path_factory, "member", duplicates="6x2,1x10", vae_steps=100, unet_steps=400, batch_size=8)


@pytest.fixture(scope="session")
def never_seen(tmp_path_factory) -> Path:
    """24 photographs the membership toy never saw: twelve whole, and their centre halves, at 32 px."""
    from imgextract.demo.photos import write_never_seen
    return write_never_seen(tmp_path_factory.mktemp("never-seen"))
