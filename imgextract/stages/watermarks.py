"""Watermark artifacts: reproduced stock-photo marks in generations (and training images).

Three independent detectors, any of which sets the ``watermark`` flag:

* **OCR + brand list**: PP-OCRv4 text detection and recognition (``rapidocr-onnxruntime``,
  models shipped in the wheel), then each text line is compared with stock-photo brand names
  tolerating the garbling generations produce: case, spacing and punctuation are dropped,
  look-alike characters (i/l/1/|, o/0, s/5) are merged, and a brand matches a window of the
  text within a small Levenshtein distance (1 substitution up to 6 letters, 2 edits up to 10,
  3 beyond).
* **Logo templates**: multi-scale normalised cross-correlation (OpenCV ``matchTemplate``,
  ``TM_CCOEFF_NORMED``) of user-supplied template images.
* **LAION watermark classifier** (optional): timm ``efficientnet_b3a`` with LAION's small head,
  weights from a local file, loaded with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np
import pandas as pd
from PIL import Image

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.progress import Step
from imgextract.sources.images import IMAGE_SUFFIXES, BadImage, list_image_files, open_rgb

WATERMARKS = "watermarks.parquet"
DEFAULT_BRANDS: dict[str, list[str]] = {
    "Getty Images": ["Getty Images", "gettyimages"],
    "iStock": ["iStock", "iStockphoto"],
    "Shutterstock": ["Shutterstock"],
    "Alamy": ["Alamy", "Alamy Stock Photo"],
    "Adobe Stock": ["Adobe Stock"],
    "Dreamstime": ["Dreamstime"],
    "Depositphotos": ["Depositphotos"],
    "123RF": ["123RF"],
}
COMMON_PARTS = {"stock", "photo", "photos", "images", "dream", "time", "deposit"}  # words left by a cut name
LOOKALIKES = str.maketrans({"i": "l", "1": "l", "|": "l", "!": "l", "0": "o", "5": "s"})


def compact(text: str) -> str:
    """Lower case, letters and digits only, look-alikes merged ("rn" reads as "m"): how brand and
    OCR text are compared."""
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch in "|!").translate(LOOKALIKES).replace("rn", "m")


def words(text: str) -> list[str]:
    """The compacted words of a text line (split on spaces and punctuation)."""
    import re
    return [w for w in (compact(t) for t in re.split(r"[\s.,:;/()\[\]{}'\"©®™*+-]+", text)) if w]


def allowed_edits(length: int) -> int:
    return 1 if length <= 6 else 2 if length <= 10 else 3


def brand_distance(alias: str, text: str) -> int:
    """Fewest edits turning the alias into some part of the text (both compacted).

    Names of up to 6 letters are compared with whole words or two joined words, by
    substitutions only: "Alameda" is not "Alamy", "Stock" and "Stockholm" are not "iStock".
    Longer names are found in any window of the text, one letter longer or shorter."""
    from rapidfuzz.distance import Hamming, Levenshtein
    a = compact(alias)
    if not a:
        return 10 ** 6
    if len(a) <= 6:
        ws = words(text)
        runs = ws + ["".join(ws[i:i + 2]) for i in range(len(ws) - 1)]
        return min([Hamming.distance(a, r) for r in runs if len(r) == len(a)], default=len(a))
    t = compact(text)
    if not t:
        return 10 ** 6
    if len(t) <= len(a) + 1:
        return Levenshtein.distance(a, t)
    best = len(a)
    for width in (len(a) - 1, len(a), len(a) + 1):
        for start in range(0, len(t) - width + 1):
            best = min(best, Levenshtein.distance(a, t[start:start + width], score_cutoff=best))
    return best


def match_brand(text: str, brands: dict[str, list[str]]) -> tuple[str, float] | None:
    """(brand, similarity in [0,1]) of the closest brand within the allowed edits, else None."""
    found = None
    for brand, aliases in brands.items():
        for alias in aliases:
            n = len(compact(alias))
            d = brand_distance(alias, text)
            if d <= allowed_edits(n):
                sim = 1 - d / n
                if found is None or sim > found[1]:
                    found = (brand, sim)
    return found


def match_cut_brand(text: str, brands: dict[str, list[str]], side: str) -> tuple[str, float] | None:
    """A mark the frame cuts: the text's end (``side`` "right") or start ("left") is a brand's start or end.

    Only lines that reach the frame's edge are read this way. What is left must be 6 or more
    letters, or 4–5 letters and at least 60% of the name ("Alam", not "Dream" of "Dreamstime");
    up to 6 letters it must agree exactly ("Sweet Dreame" is not a cut "Dreamstime"), up to 9
    with one edit, beyond with two. The similarity is the share of the name seen, less the edits."""
    from rapidfuzz.distance import Levenshtein
    t = compact(text)
    common = {compact(w) for w in COMMON_PARTS}
    found = None
    for brand, aliases in brands.items():
        for alias in aliases:
            a = compact(alias)
            for k in range(min(len(t), len(a) - 1), min(6, max(4, -(-len(a) * 3 // 5))) - 1, -1):
                seen, part = (t[-k:], a[:k]) if side == "right" else (t[:k], a[-k:])
                if seen in common:
                    break   # "Stock" is the end of "iStock" and a word of its own: not a mark
                d = Levenshtein.distance(seen, part)
                if d <= (0 if k <= 6 else 1 if k <= 9 else 2):
                    sim = (k - d) / len(a)
                    if found is None or sim > found[1]:
                        found = (brand, sim)
                    break
    return found


def load_brands(path: Path | None) -> dict[str, list[str]]:
    """Default brands plus a user file: one brand per line, ``Name`` or ``Name: alias, alias``."""
    brands = {k: list(v) for k, v in DEFAULT_BRANDS.items()}
    if path is None:
        return brands
    path = Path(path)
    if not path.is_file():
        raise InputError(f"brands file {path} does not exist", "give a text file with one brand per line")
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, aliases = line.partition(":")
        brands.setdefault(name.strip(), [name.strip()])
        brands[name.strip()] += [a.strip() for a in aliases.split(",") if a.strip()]
    return brands


@dataclass
class Template:
    name: str
    grey: np.ndarray


def load_templates(folder: Path | None) -> list[Template]:
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"templates folder {folder} does not exist", "give a folder of logo images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"templates folder {folder} holds no images",
                         f"put logo images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it, or drop --templates")
    out = []
    for p in files:
        try:
            out.append(Template(p.stem, np.asarray(open_rgb(p).convert("L"), dtype=np.uint8)))
        except BadImage as bad:
            raise InputError(f"template {p} cannot be read ({bad.reason})", "replace or remove that file") from bad
    return out


def match_templates(grey: np.ndarray, templates: list[Template],
                    scales: tuple[float, ...] = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4)) -> tuple[str, float, list[int]] | None:
    """Best (template, NCC score, box) over templates and scales; template width relative to the image."""
    import cv2
    best = None
    h, w = grey.shape
    for t in templates:
        for s in scales:
            tw = int(w * s)
            th = int(round(t.grey.shape[0] * tw / t.grey.shape[1]))
            if tw < 8 or th < 8 or tw > w or th > h:
                continue
            resized = cv2.resize(t.grey, (tw, th), interpolation=cv2.INTER_AREA)
            if resized.std() < 1e-3:
                continue
            res = cv2.matchTemplate(grey, resized, cv2.TM_CCOEFF_NORMED)
            _, score, _, loc = cv2.minMaxLoc(res)
            if best is None or score > best[1]:
                best = (t.name, float(score), [int(loc[0]), int(loc[1]), int(loc[0] + tw), int(loc[1] + th)])
    return best


class WatermarkClassifier:
    """LAION's watermark detector: efficientnet_b3a + a 1536→625→256→2 head; P(watermark) = softmax[0]."""

    def __init__(self, path: Path, device: str = "cpu"):
        import torch
        path = Path(path)
        if not path.is_file():
            raise InputError(f"watermark classifier {path} does not exist",
                             "download LAION's watermark_model_v1.pt (or a .safetensors copy) and point --classifier at it")
        self.model = build_classifier()
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            self.model.load_state_dict(state)
        except Exception as exc:  # any failure to parse or fit means the file is not this classifier
            raise InputError(f"watermark classifier {path} cannot be loaded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''})",
                             "give the efficientnet_b3a watermark weights as .pt (state dict) or .safetensors") from exc
        self.device = device
        self.model.eval().to(device)

    def __call__(self, images: list[Image.Image]) -> np.ndarray:
        import torch
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB").resize((256, 256), Image.BILINEAR),
                                                     dtype=np.float32) / 255).permute(2, 0, 1) for im in images])
        with torch.no_grad():
            logits = self.model(((x - mean) / std).to(self.device))
        return torch.softmax(logits, dim=1)[:, 0].cpu().numpy()


def build_classifier():
    import timm
    from torch import nn
    model = timm.create_model("efficientnet_b3", pretrained=False, num_classes=2)  # timm's name for b3a
    model.classifier = nn.Sequential(nn.Linear(in_features=1536, out_features=625), nn.ReLU(), nn.Dropout(p=0.3),
                                     nn.Linear(in_features=625, out_features=256), nn.ReLU(),
                                     nn.Linear(in_features=256, out_features=2))
    return model


@dataclass
class Detector:
    brands: dict[str, list[str]] = field(default_factory=lambda: load_brands(None))
    templates: list[Template] = field(default_factory=list)
    classifier: WatermarkClassifier | None = None
    ocr_min_confidence: float = 0.3   # recognition scores a line must reach: at 0.5 a faint mark read in part was dropped
    template_threshold: float = 0.7
    classifier_threshold: float = 0.5
    max_side: int = 1024
    box_threshold: float = 0.3      # PP-OCR's default 0.5 misses faint, semi-transparent marks
    pad: int = 16                   # the last look's margin: PP-OCR drops glyphs that touch the frame ("ty Images" read "Images")
    _ocr: object = None

    def ocr(self, image: Image.Image, pad: int = 0, **kwargs) -> list[tuple[list[int], str, float]]:
        """(axis-aligned box, text, confidence) of every text line PP-OCRv4 reads; ``pad``: read inside a margin
        of that many pixels of the image's mean colour (boxes stay in the image's own pixels)."""
        if self._ocr is None:
            from rapidocr_onnxruntime import RapidOCR
            self._ocr = RapidOCR()
        scale = min(1.0, self.max_side / max(image.size))
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        rgb = np.asarray(image.convert("RGB"))
        if pad:   # text that touches the frame is read from a margin of the image's mean colour around it
            rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)))
            rgb[:pad], rgb[-pad:], rgb[:, :pad], rgb[:, -pad:] = (rgb[pad:-pad, pad:-pad].reshape(-1, 3).mean(0)
                                                                  .round().astype(np.uint8),) * 4
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        result, _ = self._ocr(bgr, box_thresh=self.box_threshold, text_score=self.ocr_min_confidence, **kwargs)
        lines = []
        w, h = image.size
        for quad, text, conf in result or []:
            q = (np.asarray(quad, dtype=np.float32) - pad).clip(0, [w, h]) / scale
            box = [int(q[:, 0].min()), int(q[:, 1].min()), int(q[:, 0].max()), int(q[:, 1].max())]
            lines.append((box, str(text), float(conf)))
        return lines

    def read_brand(self, lines: list[tuple[list[int], str, float]],
                   size: tuple[int, int] | None = None) -> tuple[str, list[int], float] | None:
        """Best brand over text lines and over pairs of lines (OCR often splits "Getty | Images");
        with the image's ``size``, a line that reaches the left or right edge may be a cut mark."""
        good = [ln for ln in lines if ln[2] >= self.ocr_min_confidence]
        candidates = [(box, text, conf) for box, text, conf in good]
        for i, (b1, t1, c1) in enumerate(good):
            for b2, t2, c2 in good[i + 1:]:
                box = [min(b1[0], b2[0]), min(b1[1], b2[1]), max(b1[2], b2[2]), max(b1[3], b2[3])]
                candidates += [(box, f"{t1} {t2}", min(c1, c2)), (box, f"{t2} {t1}", min(c1, c2))]
        best = None
        for box, text, conf in candidates:
            hit = match_brand(text, self.brands)
            if hit and (best is None or hit[1] * conf > best[2]):
                best = (hit[0], box, hit[1] * conf)
        if best is None and size is not None:
            # a line, or two in reading order (OCR splits "Getty | Im"), whose outer end meets the frame
            ordered = [(box, text, conf, box, box) for box, text, conf in good]
            for i, (b1, t1, c1) in enumerate(good):
                for b2, t2, c2 in good[i + 1:]:
                    (la, ta), (lb, tb) = sorted([(b1, t1), (b2, t2)], key=lambda bt: bt[0][0])
                    box = [min(la[0], lb[0]), min(la[1], lb[1]), max(la[2], lb[2]), max(la[3], lb[3])]
                    ordered.append((box, f"{ta} {tb}", min(c1, c2), la, lb))
            for box, text, conf, first, last in ordered:
                # the edge may cut a glyph the OCR leaves out of its box: up to ~0.6 of the line's height
                margin = max(0.04 * size[0] + 3, 0.6 * (box[3] - box[1]))
                for side in [s for s, at_edge in (("left", first[0] <= margin), ("right", last[2] >= size[0] - margin))
                             if at_edge]:
                    hit = match_cut_brand(text, self.brands, side)
                    if hit and (best is None or hit[1] * conf > best[2]):
                        best = (hit[0], box, hit[1] * conf)
        return best

    def row(self, path: str, image: Image.Image | None, error: str | None = None) -> dict:
        """watermarks.parquet's row for one image; ``image`` None: unreadable, for ``error``."""
        if image is None:
            return {"path": path, "watermark": None, "error": error}
        score = float(self.classifier([image])[0]) if self.classifier else None
        return {"path": path, **self.detect(image, score), "error": None}

    def detect(self, image: Image.Image, classifier_score: float | None = None) -> dict:
        lines = self.ocr(image)
        best = self.read_brand(lines, image.size)
        # more looks, while nothing is found: faint marks; last, the image inside a margin, for a mark the frame cuts
        # (as a look of its own: read with the margin first, bench_watermarks lost a garbled mark it read without)
        for look, pad in ((enhance_contrast, 0), (high_pass, 0), (None, self.pad)):
            if best is not None:
                break
            if look is None and not pad:
                continue
            lines += self.ocr(look(image) if look else image, pad=pad)
            best = self.read_brand(lines, image.size)
        row = {"watermark": False, "brand": None, "text": " | ".join(t for _, t, _ in lines), "box": None,
               "score": 0.0, "detector": None, "template": None, "template_score": None,
               "classifier_score": classifier_score, "ocr": json.dumps([[b, t, round(c, 4)] for b, t, c in lines])}
        if best:
            row.update(watermark=True, brand=best[0], box=best[1], score=best[2], detector="ocr")
        if self.templates:
            t = match_templates(np.asarray(image.convert("L"), dtype=np.uint8), self.templates)
            if t:
                row["template"], row["template_score"] = t[0], t[1]
                if t[1] >= self.template_threshold and t[1] > row["score"]:
                    row.update(watermark=True, brand=row["brand"] or t[0], box=t[2], score=t[1],
                               detector="template")
        if classifier_score is not None and classifier_score >= self.classifier_threshold and not row["watermark"]:
            row.update(watermark=True, score=classifier_score, detector="classifier")
        return row


def enhance_contrast(image: Image.Image) -> Image.Image:
    """CLAHE on the lightness channel (OpenCV): faint text over a busy photo becomes legible."""
    import cv2
    lab = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)
    lightness = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    return Image.fromarray(lightness).convert("RGB")


def high_pass(image: Image.Image, sigma: float = 3.0, gain: float = 6.0) -> Image.Image:
    """The grey image less its blur, amplified: a mark with no outline, a few percent brighter
    than a smooth background, becomes dark-on-grey text; the photograph's broad shading goes."""
    import cv2
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    detail = grey - cv2.GaussianBlur(grey, (0, 0), sigma)
    return Image.fromarray(np.clip(128 + gain * detail, 0, 255).astype(np.uint8)).convert("RGB")


def list_targets(images: Path) -> tuple[list[str], Path]:
    """Image paths to check and the default output folder: a run, an index, or a plain folder."""
    images = Path(images)
    if rundir.is_run_dir(images):
        samples = rundir.read_samples(images)
        if samples.empty:
            raise InputError(f"run {images} has no finished sample shard", "run `imgextract generate` first")
        return samples["generation_path"].tolist(), images
    if (images / "images.parquet").is_file() and (images / "embedder.json").is_file():
        return pd.read_parquet(images / "images.parquet")["path"].tolist(), images
    if images.is_dir():
        good, bad = list_image_files(images)  # broken links and loops stay in: listed as unreadable
        files = [str(p) for p in good] + [b["path"] for b in bad if "link out" not in b["reason"]]
        if not files:
            raise InputError(f"folder {images} holds no images", "point at a folder of images, a run or an index")
        return files, images.with_name(images.name + "-watermarks")
    raise InputError(f"{images} is not a folder", "pass a run folder, an index folder or a folder of images")


def run_watermarks(images: Path, out: Path | None, detector: Detector) -> Generator[Step, None, pd.DataFrame]:
    """watermarks.parquet for every image; unreadable images are listed with watermark = None.
    Yields progress; returns the table."""
    paths, default = list_targets(images)
    out = Path(out) if out else default
    rows = []
    for p in paths:
        yield Step("watermarks", len(rows), len(paths), "img")
        try:
            image, error = open_rgb(Path(p)), None
        except BadImage as bad:
            image, error = None, bad.reason
        rows.append(detector.row(p, image, error))
    yield Step("watermarks", len(rows), len(paths), "img")
    table = pd.DataFrame(rows)
    rundir.write_parquet_atomic(out / WATERMARKS, table)
    return table


def watermark_summary(run: Path, index_path: Path | None = None) -> dict | None:
    """Per-caption watermark rates of a run; "reproduced" when the caption's training image
    (from the captions' train_path) is flagged in the index's own watermarks.parquet."""
    run = Path(run)
    wm_file = run / WATERMARKS
    if not wm_file.is_file() or not rundir.is_run_dir(run):
        return None
    wm = pd.read_parquet(wm_file)
    samples = rundir.read_samples(run)
    merged = samples.merge(wm[["path", "watermark", "brand"]], left_on="generation_path", right_on="path", how="inner")
    train_flags: dict[str, bool] = {}
    if index_path is not None and (Path(index_path) / WATERMARKS).is_file():
        tw = pd.read_parquet(Path(index_path) / WATERMARKS)
        train_flags = {p: bool(f) for p, f in zip(tw["path"], tw["watermark"]) if f is not None and not pd.isna(f)}
    captions = pd.read_parquet(run / rundir.CAPTIONS).set_index("caption_id")
    per_caption = []
    for cid, grp in merged.groupby("caption_id", sort=True):
        flags = grp["watermark"].fillna(False).astype(bool)
        train_path = captions["train_path"].get(cid) if cid in captions.index else None
        train_marked = train_flags.get(train_path) if train_path else None
        rate = float(flags.mean())
        brands = sorted({b for b in grp.loc[flags, "brand"] if b})
        per_caption.append({"caption_id": str(cid), "caption": grp["caption"].iat[0], "samples": len(grp),
                            "watermarked": int(flags.sum()), "rate": rate, "brands": brands,
                            "train_watermarked": train_marked,
                            "reproduced": bool(rate > 0 and train_marked) if train_marked is not None else None})
    return {"generations_checked": len(merged), "watermarked": int(merged["watermark"].fillna(False).sum()),
            "training_images_checked": len(train_flags), "per_caption": per_caption}
