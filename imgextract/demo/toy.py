"""A toy text-to-image model that really memorizes, trained offline with known duplication.

Recipe (measured on a 2-core CPU; see docs/toy.md): real photographs centre-cropped to 32×32, a
duplication schedule such as ``100x1,10x4,1x25``; a tiny VAE (32×32 → 16×16×4) trained first,
then a tiny UNet2DConditionModel and a 2-layer CLIP text encoder trained jointly to predict
the clean latent (x0-prediction memorizes far faster than ε at this size), AdamW 2e-3 with
warm-up, gradient clipping, 10% caption dropout. The result is saved as a normal
``StableDiffusionPipeline`` folder plus ``train/`` (distinct images, sidecar captions,
``copies.csv``), so it is audited exactly like a real checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from imgextract import rundir
from imgextract.demo.photos import photo
from imgextract.demo.toy_models import TOY_ARCHS
from imgextract.distance import fit
from imgextract.demo.settings import ToyConfig
from imgextract.errors import InputError
from imgextract.progress import Step
from imgextract.sources.images import open_rgb
from imgextract.sources.tables import list_images


def _photo(name: str) -> Callable[[], Image.Image]:
    return lambda: photo(name)


def _crop(load: Callable[[], Image.Image], box: tuple[float, float, float, float]) -> Callable[[], Image.Image]:
    """A region of a larger photograph (box in fractions) as a distinct image."""
    def cropped() -> Image.Image:
        im = load()
        w, h = im.size
        return im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    return cropped


# The default training images, most distinctive first: a duplication spec assigns copies in
# this order. Low-contrast images (grass, gravel, brick, moon, hubble, clock, text) are left out
# on purpose: at 32×32 they sit within 0.15 tiled L2 of any smooth image, so a single-copy one
# reads as "memorized" without being copied.
DEFAULT_IMAGES: list[tuple[str, str, Callable[[], Image.Image]]] = [
    ("astronaut", "portrait of an astronaut in a white spacesuit in front of a flag", _photo("astronaut")),
    ("rocket", "a rocket on its launch pad under a clear blue sky", _photo("rocket")),
    ("chelsea", "a ginger tabby cat looking to the side", _photo("chelsea")),
    ("coffee", "a cup of coffee on a saucer seen from above", _photo("coffee")),
    ("china", "the roof of a chinese temple against a blue sky", _photo("china")),
    ("camera", "black and white photo of a man with a camera on a tripod", _photo("camera")),
    ("coins", "grey photo of old coins on a dark background", _photo("coins")),
    ("ihc", "microscope slide of stained tissue in brown and blue", _photo("immunohistochemistry")),
    ("retina", "fundus photograph of a human retina in orange", _photo("retina")),
    ("colorwheel", "a circular wheel of rainbow colours on white", _photo("colorwheel")),
    ("page", "a scanned page of printed text", _photo("page")),
    ("logo", "a logo with a snake on a blue and orange background", _photo("logo")),
    ("cell", "grey microscope image of a single cell", _photo("cell")),
    ("flower", "a pink flower in close-up with green leaves", _photo("flower")),
    ("ascent", "black and white photo of people on a stone staircase", _photo("ascent")),
    ("aero", "aerial photograph of a town from above", _photo("aero")),
    ("flower-petals", "detail of pink petals", _crop(_photo("flower"), (.3, .2, .6, .6))),
    ("aero-streets", "detail of streets seen from an aeroplane", _crop(_photo("aero"), (.5, .5, .9, .9))),
    ("ascent-steps", "close-up of a few stone steps", _crop(_photo("ascent"), (.1, .5, .45, .9))),
    ("coins-row", "a row of three coins", _crop(_photo("coins"), (0, 0, .5, .3))),
    ("ihc-detail", "brown stained cells under a microscope, close-up", _crop(_photo("immunohistochemistry"), (.6, .6, 1, 1))),
    ("china-eave", "the corner of a temple roof", _crop(_photo("china"), (.05, .1, .4, .45))),
    ("camera-head", "close-up of a photographer's head and camera", _crop(_photo("camera"), (.25, .05, .65, .45))),
    ("logo-snake", "detail of a snake drawn on a logo", _crop(_photo("logo"), (.25, .25, .75, .75))),
    ("flower-leaves", "green leaves beside a flower", _crop(_photo("flower"), (0, .5, .4, 1))),
    ("retina-vessels", "red blood vessels on an orange retina", _crop(_photo("retina"), (.15, .2, .45, .5))),
    ("ihc-corner", "corner of a stained tissue sample", _crop(_photo("immunohistochemistry"), (0, 0, .4, .4))),
    ("china-tree", "a green tree in front of a temple", _crop(_photo("china"), (.6, .5, 1, 1))),
    ("ascent-wall", "detail of a stone wall and a doorway", _crop(_photo("ascent"), (.5, 0, .9, .4))),
    ("aero-fields", "fields and roads seen from an aeroplane", _crop(_photo("aero"), (0, 0, .4, .4))),
    ("colorwheel-quarter", "a quarter of a colour wheel", _crop(_photo("colorwheel"), (0, 0, .5, .5))),
    ("coins-single", "a single old coin in close-up", _crop(_photo("coins"), (.6, .6, .9, .95))),
]


def _parts(spec: str) -> list[tuple[int, str, int]]:
    """``100x1,3t5`` → [(100, "x", 1), (3, "t", 5)], every part checked."""
    out = []
    for part in spec.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)([xt])(\d+)", part)
        if not m:
            raise InputError(f"duplication spec '{spec}' has a bad part '{part}'",
                             "write COPIESxIMAGES parts (and FAMILIEStMEMBERS for template families) separated by "
                             "commas, e.g. 100x1,10x4,1x25,3t5") from None
        a, kind, b = int(m.group(1)), m.group(2), int(m.group(3))
        if a < 1 or b < 1 or (kind == "t" and b < 2):
            raise InputError(f"duplication spec '{spec}' has a non-positive number in '{part}'",
                             "use positive copies and image counts, and at least 2 members per family")
        out.append((a, kind, b))
    return out


def parse_spec(spec: str) -> list[int]:
    """``100x1,10x4,1x25`` → copies per image in order: [100, 10, 10, 10, 10, 1, ..., 1]."""
    return [n for n, kind, count in _parts(spec) if kind == "x" for _ in range(count)]


def parse_families(spec: str) -> list[int]:
    """``3t5`` → members per template family: [5, 5, 5] (each member seen once)."""
    return [m for n, kind, m in _parts(spec) if kind == "t" for _ in range(n)]


# Template families: a textured background every member shares, and its own photograph in the window
# (a quarter of the area, composites.WINDOW). Webster's template verbatim, at toy scale.
FAMILY_BACKGROUNDS = [("workshop", "a motorcycle in a workshop", "stereo_motorcycle_left"),   # learned soonest
                      ("galaxies", "a field of distant galaxies", "hubble_deep_field"),
                      ("wallclock", "a clock on a plain wall", "clock")]
FAMILY_CONTENTS = ["astronaut", "coffee", "rocket", "chelsea", "camera", "coins", "retina", "page", "logo",
                   "immunohistochemistry", "colorwheel", "china", "flower", "cell", "ascent", "aero"]


@dataclass
class TrainImage:
    name: str
    caption: str
    image: Image.Image
    copies: int
    family: str = ""          # the template family it belongs to, if any


def training_set(cfg: ToyConfig, images: Path | None = None) -> tuple[list[TrainImage], list[TrainImage]]:
    """(images in the training set with their copy counts, images left out), both at cfg.size."""
    if cfg.size % 8 or not 16 <= cfg.size <= 256:
        raise InputError(f"--size {cfg.size} does not fit the toy model",
                         "use a multiple of 8 between 16 and 256 (32 is the measured default)")
    copies = parse_spec(cfg.duplicates)
    if images is None:
        pool = [(name, cap, load) for name, cap, load in DEFAULT_IMAGES]
        source = f"the {len(pool)} built-in photographs"
    else:
        records = list_images(Path(images))
        missing = [r.path for r in records if not r.caption]
        if missing:
            raise InputError(f"image {missing[0]} in {images} has no caption",
                             "give every image a sidecar .txt caption or a caption column")
        pool = [(r.path.stem, r.caption, (lambda p=r.path: _open(p))) for r in records]
        source = str(images)
    if len(copies) > len(pool):
        raise InputError(f"duplication spec '{cfg.duplicates}' names {len(copies)} images but {source} hold "
                         f"{len(pool)}", f"name at most {len(pool)} images, or add images with --images")
    loaded = [TrainImage(name, cap, fit(load(), (cfg.size, cfg.size)), 0) for name, cap, load in pool]
    for item, n in zip(loaded, copies):
        item.copies = n
    families = template_families(parse_families(cfg.duplicates), cfg.size)
    return loaded[:len(copies)] + families, loaded[len(copies):]


def template_families(members: list[int], size: int) -> list[TrainImage]:
    """Each family: one background, ``m`` members with their own photograph in the window, seen once each."""
    from imgextract.demo.composites import square, templated
    if len(members) > len(FAMILY_BACKGROUNDS) or max(members, default=0) > len(FAMILY_CONTENTS):
        raise InputError(f"template families {members} ask for more than {len(FAMILY_BACKGROUNDS)} families of "
                         f"{len(FAMILY_CONTENTS)} members", "use fewer families or members")
    out = []
    for f, m in enumerate(members):
        key, caption, source = FAMILY_BACKGROUNDS[f]
        background = square(photo(source), size)
        for i in range(m):
            content = FAMILY_CONTENTS[(f * 5 + i) % len(FAMILY_CONTENTS)]
            out.append(TrainImage(f"{key}-{content}", f"{caption}, with a picture of {content} in the middle",
                                  templated(background, square(photo(content), size)), 1, key))
    return out


def _open(path: Path) -> Image.Image:
    return open_rgb(path)


def write_train_folder(out: Path, items: list[TrainImage]) -> None:
    """``train/``: distinct images + sidecar captions + copies.csv (the known ground truth)."""
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    with open(train / "copies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption", "copies", "family"])
        for it in items:
            it.image.save(train / f"{it.name}.png")
            (train / f"{it.name}.txt").write_text(it.caption)
            w.writerow([f"{it.name}.png", it.caption, it.copies, it.family])


CHECKPOINT = ".checkpoint.pt"


TOY_MARKER = ".imgextract-toy"


def check_toy_folder(out: Path) -> None:
    """Train only into a new or empty folder, or one that is already a toy model's (its marker)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file", "name a folder for the toy model")
    if not out.is_dir() or any((out / f).is_file() for f in (TOY_MARKER, "toy.json", CHECKPOINT)):
        return
    if any(not p.name.startswith(".imgextract.lock") for p in out.iterdir()):
        raise InputError(f"--out {out} holds files that are not a toy model's",
                         "choose a new or empty folder; imgextract writes a model only where it owns the folder")


def train(out: Path, cfg: ToyConfig = ToyConfig(), images: Path | None = None) -> Iterator[Step]:
    """Train (or resume) the toy model into ``out``; yields progress (seconds of the time budget, or
    steps when both step counts are fixed), ends with the saved pipeline."""
    import torch
    import torch.nn.functional as F

    out = Path(out)
    items, _ = training_set(cfg, images)
    check_toy_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / TOY_MARKER).touch()
    done_marker = out / "toy.json"
    if done_marker.is_file() and {"arch": "unet", **rundir.read_json(done_marker).get("config", {})} == asdict(cfg):
        return   # finished (a model trained before the architecture was a setting is a UNet toy)
    model = TOY_ARCHS[cfg.arch](cfg.size, cfg.seed)
    vae, trained = model.vae, model.modules
    pixels = torch.tensor(np.stack([np.asarray(it.image, np.float32) / 127.5 - 1 for it in items])).permute(0, 3, 1, 2)
    weights = torch.tensor([float(it.copies) for it in items])
    captions = [it.caption for it in items]
    gen = torch.Generator().manual_seed(cfg.seed)
    budget = cfg.minutes * 60
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    params = [p for m in trained.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    state = {"phase": "vae", "step": 0, "elapsed": 0.0}
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=True)
        if saved["config"] == json.dumps(asdict(cfg), sort_keys=True):
            vae.load_state_dict(saved["vae"])
            for name, module in trained.items():
                module.load_state_dict(saved["modules"][name])
            vae_opt.load_state_dict(saved["vae_opt"]), opt.load_state_dict(saved["opt"])
            gen.set_state(saved["gen"])
            state = json.loads(saved["state"])

    def save_checkpoint() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"config": json.dumps(asdict(cfg), sort_keys=True), "vae": vae.state_dict(),
                    "modules": {name: m.state_dict() for name, m in trained.items()}, "vae_opt": vae_opt.state_dict(),
                    "opt": opt.state_dict(), "gen": gen.get_state(), "state": json.dumps(state)}, tmp)
        os.replace(tmp, ckpt)

    start = time.monotonic() - state["elapsed"]
    last_save = time.monotonic()

    def tick(loss: float) -> Step:
        nonlocal last_save
        state["elapsed"] = time.monotonic() - start
        if time.monotonic() - last_save >= cfg.checkpoint_every:
            save_checkpoint()
            last_save = time.monotonic()
        detail = f"{state['phase']} step {state['step']} loss {loss:.4f}"
        if cfg.vae_steps is not None and cfg.unet_steps is not None:
            done = state["step"] + (state.get("vae_steps") or 0) if state["phase"] == "denoiser" else state["step"]
            return Step("train", done, cfg.vae_steps + cfg.unet_steps, "step", detail)
        return Step("train", round(state["elapsed"]), round(budget), "s", detail)

    # phase 1: the VAE learns to reconstruct the distinct images (uniformly, not by copies), each at most once a
    # step: 16 draws with repeats from a handful of images cost up to 2.7x the time for no more to learn
    vae.train()
    vae_batch = min(16, len(items))
    while state["phase"] == "vae":
        if (cfg.vae_steps is not None and state["step"] >= cfg.vae_steps) or \
                (cfg.vae_steps is None and state["elapsed"] >= budget * cfg.vae_share):
            state.update(phase="denoiser", vae_steps=state["step"], step=0)
            break
        idx = torch.randperm(len(items), generator=gen)[:vae_batch]
        x = pixels[idx]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        vae_opt.zero_grad()
        loss.backward()
        vae_opt.step()
        state["step"] += 1
        yield tick(loss.item())
    vae.eval()
    with torch.no_grad():
        latents_raw = vae.encode(pixels).latent_dist.mean
    latents, factors = model.latents(latents_raw)

    # phase 2: the denoiser + its text encoders, images drawn in proportion to their copies
    for m in trained.values():
        m.train()
    while state["phase"] == "denoiser":
        if (cfg.unet_steps is not None and state["step"] >= cfg.unet_steps) or \
                (cfg.unet_steps is None and state["elapsed"] >= budget):
            break
        idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
        loss = model.loss(latents[idx], ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())], gen)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (state["step"] + 1) / cfg.warmup)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["step"] += 1
        yield tick(loss.item())

    vae.register_to_config(**factors)
    for m in trained.values():
        m.eval()
    model.pipeline().save_pretrained(out, safe_serialization=True)
    write_train_folder(out, items)
    rundir.write_json_atomic(done_marker, {
        "config": asdict(cfg), "images": str(images) if images else "built-in",
        "vae_steps": state.get("vae_steps"), "unet_steps": state["step"], "train_seconds": round(state["elapsed"], 1),
        **factors, "arch": cfg.arch, "copies": {it.name: it.copies for it in items},
        "families": {it.name: it.family for it in items if it.family},
        "recipe": model.recipe})
    ckpt.unlink(missing_ok=True)
