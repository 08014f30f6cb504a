"""The artist's check: is my work in the training set, under which captions, and can the model draw it?

Three questions, each answered only as far as the evidence goes:

1. **In the training set** (with ``--index``): the work is searched in the training index and every
   candidate is judged with the copy verdict (``copies.py``). Only pixel-verified copies (whole,
   portion, template) count; a neighbour that merely looks alike does not. Each copy is listed with
   its id, URL, caption, licence, kind and share.
2. **Regurgitated / extracted**: the model is sampled under the captions it learned the work under
   (the distinct captions of its training copies, weighted by how many copies carry each), then the
   work's own prompt (captions table, sidecar text or file name). A work with ``c`` training copies
   draws ``samples × (1 + min(c, 3))`` samples: its own prompt ``samples``, its training captions the
   rest. The whole check is bounded by ``4 × samples × works``. A copy drawn by a training caption is
   *regurgitated*; by any other prompt, *extracted*.
3. **Reconstructable** (``--reconstruct``): when no prompt reproduced the work, a fixed-budget search
   for a conditioning that draws it (``stages/reconstruct.py``), with the same search run on
   calibration images the model never saw (``--null``): its rate there is reported beside the result.

Per work, in plain words that do not overclaim:

* **reproduced** — a sample is a copy by the copy verdict: whole, a portion or a template, said with
  its share ("reproduced (a portion, 48%)"), naming the caption and seed that drew it;
* **close** — a sample matches by perceptual hash (phash distance ≤ 10) or by Carlini's relative
  distance, but is not a near-exact copy;
* **not reproduced in N samples** — nothing close turned up; that is not proof the model has not
  memorized the work (more samples or other prompts may find it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.images import IMAGE_SUFFIXES, BadImage, list_image_files, open_rgb
from imgextract.sources.tables import read_captions
from imgextract.stages.scan import strongest_first

PHASH_CLOSE = 10
EXTRA_CAP = 3          # a work with c training copies draws samples × (1 + min(c, EXTRA_CAP)) samples
TRAINING_K = 50        # training candidates judged per work: copies beyond the 50 nearest go unseen
TRAINING_CAPTION = "training caption"


@dataclass
class Prompt:
    """One prompt a work is sampled under, and why."""
    caption_id: str
    prompt: str
    source: str            # training caption | captions file | sidecar text | file name | --caption
    samples: int
    copies: int = 0        # training copies that carry this caption

    def record(self) -> dict:
        return {"caption_id": self.caption_id, "prompt": self.prompt, "source": self.source,
                "samples": self.samples, "training_copies": self.copies}


@dataclass
class WorkVerdict:
    work: str
    prompt: str
    prompt_source: str
    verdict: str
    best_tiled_l2: float | None
    best_phash: int | None
    samples: int
    reason: str | None = None
    best_seed: int | None = None
    other_prompt: dict | None = None   # another work's prompt whose sample copies this work
    best_exact: bool = True            # False: best_tiled_l2 is a thumbnail lower bound (the scan's `exact`)
    kind: str = "none"                 # the copy's kind when reproduced: whole | portion | template
    share: float = 0.0                 # its copied share of the work (copies.Judgement.share)
    training_copies: list[dict] | None = None   # None: no training index was searched
    prompts: list[Prompt] | None = None
    reproduced_by: dict | None = None  # {caption_id, prompt, source, seed} of the best copy
    reconstruction: dict | None = None
    sscd_similarity: float | None = None   # with --descriptor: the best SSCD similarity of its samples to it

    @property
    def in_training(self) -> bool | None:
        return None if self.training_copies is None else bool(self.training_copies)

    def terms(self) -> list[str]:
        """The legal terms that apply (Cooper & Grimmelmann), strongest evidence last."""
        out = ["in the training set"] if self.in_training else []
        if self.verdict == "reproduced" and self.reproduced_by:
            out.append("regurgitated" if self.reproduced_by["source"] == TRAINING_CAPTION else "extracted")
        elif self.other_prompt:
            out.append("extracted")
        if self.reconstruction and self.reconstruction.get("reconstructed"):
            out.append("reconstructable")
        if self.verdict != "unreadable" and not any(t in out for t in ("regurgitated", "extracted", "reconstructable")):
            out.append(f"not reproduced in {self.samples} samples")
        return out

    def record(self) -> dict:
        """check.json's row: what scripts read instead of parsing the page."""
        return {"work": self.work, "verdict": "not reproduced" if self.verdict.startswith("not reproduced")
                else self.verdict, "sentence": self.sentence(), "terms": self.terms(), "prompt": self.prompt,
                "prompt_source": self.prompt_source, "best_tiled_l2": self.best_tiled_l2,
                "best_tiled_l2_exact": self.best_exact,
                "best_phash_distance": self.best_phash, "best_seed": self.best_seed,
                "samples_drawn": self.samples, "reason": self.reason, "other_prompt_close": self.other_prompt,
                "copy_kind": self.kind, "copied_share": self.share, "in_training": self.in_training,
                "training_copies": self.training_copies,
                "prompts": [p.record() for p in self.prompts] if self.prompts is not None else None,
                "reproduced_by": self.reproduced_by, "reconstruction": self.reconstruction,
                "sscd_similarity": self.sscd_similarity}

    def sentence(self) -> str:
        if self.verdict == "unreadable":
            return f"unreadable: {Path(self.work).name} could not be read ({self.reason}); it was not checked"
        if self.verdict == "reproduced":
            how = "whole" if self.kind == "whole" else f"a {self.kind}, {self.share:.0%}"
            what = "a near-exact copy" if self.kind == "whole" else \
                f"a near-exact copy of {self.share:.0%} of the image"
            by = self.reproduced_by or {"prompt": self.prompt, "source": self.prompt_source, "seed": self.best_seed}
            return (f"reproduced ({how}): the model drew {what} of {Path(self.work).name} "
                    f"(tiled L2 {self.best_tiled_l2:.3f}) from the prompt \"{by['prompt']}\" ({by['source']}, "
                    f"seed {by['seed']})")
        if self.verdict == "close":
            ph = f"phash distance {self.best_phash}, " if self.best_phash is not None else ""
            return (f"close: samples resemble {Path(self.work).name} ({ph}tiled L2 "
                    f"{'' if self.best_exact else '>= '}{self.best_tiled_l2:.3f}) but none is a near-exact copy")
        return (f"not reproduced in {self.samples} samples: no sample came close to {Path(self.work).name}; "
                "this does not show the model has not memorized it")


def read_works(path: Path) -> tuple[list[Path], list[dict]]:
    """(readable works, unreadable ones with their reason): an unreadable work is never 'not reproduced'."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{path} is not an image", f"pass an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a folder")
        files, bad = [path.resolve()], []
    elif path.is_dir():
        files, bad = list_image_files(path)
        if not files and not bad:
            raise InputError(f"folder {path} holds no images", "point at the folder of your works")
    else:
        raise InputError(f"{path} does not exist", "pass one image or a folder of your works")
    works = []
    for f in files:
        try:
            open_rgb(f, min_side=4)
            works.append(f)
        except BadImage as exc:
            bad.append({"path": str(f), "reason": exc.reason})
    if not works:
        raise InputError(f"no readable work in {path} ({len(bad)} unreadable)", "check the files listed below",
                         details=[f"unreadable {b['path']}: {b['reason']}" for b in bad])
    return works, bad


def prompt_from_name(path: Path) -> str:
    """'my_red-barn.2019.png' → 'my red barn 2019'."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-.]+", " ", path.stem)).strip()


def prompts_for(works: list[Path], caption: str | None, captions_file: Path | None,
                say=print) -> list[tuple[str, str]]:
    """(prompt, where it came from) per work.

    A captions table's paths are matched relative to the table, then by file name among the
    works (a table kept beside the works folder still applies); one that matches no work is refused.
    """
    if caption and captions_file:
        raise InputError("both --caption and --captions given", "use one of them")
    if caption:
        return [(caption, "--caption")] * len(works)
    by_path: dict[str, str] = {}
    by_name: dict[str, str] = {}
    if captions_file:
        table = read_captions(Path(captions_file)).to_pandas()
        if table["train_path"].isna().all():
            raise InputError(f"captions file {captions_file} does not say which caption belongs to which work",
                             "add a 'file' column naming each work's image")
        rows = table.dropna(subset=["train_path"])
        by_path = dict(zip(rows["train_path"], rows["caption"]))
        by_name = dict(zip(rows["train_path"].map(lambda p: Path(p).name), rows["caption"]))
        matched = sum(str(w) in by_path or w.name in by_name for w in works)
        if not matched:
            raise InputError(f"captions file {captions_file} names none of the {len(works)} work(s) "
                             f"(e.g. {Path(rows['train_path'].iat[0]).name} vs {works[0].name})",
                             "make its file column name the works' files (a path or just the file name)")
        say(f"captions file {captions_file}: {matched} of {len(works)} work(s) matched")
    out = []
    for w in works:
        side = w.with_suffix(".txt")
        if str(w) in by_path or w.name in by_name:
            out.append((by_path.get(str(w), by_name.get(w.name)), "captions file"))
        elif side.is_file() and side.read_text(encoding="utf-8", errors="replace").strip():
            out.append((side.read_text(encoding="utf-8", errors="replace").strip(), "sidecar text"))
        else:
            out.append((prompt_from_name(w), "file name"))
    return out


def work_id(i: int) -> str:
    return f"w{i:04d}"


def _largest_remainder(weights: list[int], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` (whole numbers; ties go to the earlier)."""
    if not weights or total <= 0:
        return [0] * len(weights)
    quotas = [total * w / sum(weights) for w in weights]
    whole = [int(q) for q in quotas]
    for i in sorted(range(len(weights)), key=lambda i: (-(quotas[i] - whole[i]), i))[:total - sum(whole)]:
        whole[i] += 1
    return whole


def sampling_plan(i: int, own: tuple[str, str], copies: list[dict] | None, samples: int) -> list[Prompt]:
    """The work's prompts: its training captions first (weighted by how many copies carry each, sharing
    ``samples × min(copies, EXTRA_CAP)``), then its own prompt with ``samples``."""
    counts = Counter(c["caption"] for c in copies or [] if c.get("caption"))
    ranked = counts.most_common()
    extra = samples * min(len(copies or []), EXTRA_CAP) if ranked else 0
    share = _largest_remainder([n for _, n in ranked], extra)
    prompts = [Prompt(f"{work_id(i)}-t{j}", cap, TRAINING_CAPTION, k, n)
               for j, ((cap, n), k) in enumerate(zip(ranked, share)) if k > 0]
    same = next((p for p in prompts if p.prompt == own[0]), None)
    if same:   # the work's own prompt is one of its training captions: drawn once, as that caption
        same.samples += samples
    else:
        prompts.append(Prompt(work_id(i), own[0], own[1], samples))
    return prompts


def verdicts(run: Path, works: list[Path], own_prompts: list[tuple[str, str]], plans: list[list[Prompt]],
             training: list[list[dict] | None] | None = None) -> list[WorkVerdict]:
    """Per work, judged on the samples drawn for that work's own prompts (training captions included);
    another work's prompt whose sample copies the work is kept apart, as its own finding."""
    matches = pd.read_parquet(run / rundir.MATCHES)
    out = []
    for i, (w, plan) in enumerate(zip(works, plans)):  # own_prompts[i]: the work's own (prompt, source)
        own_ids = {p.caption_id: p for p in plan}
        drawn = sum(p.samples for p in plan)
        copies = training[i] if training is not None else None
        on_work = matches[matches["train_path"] == str(w)]
        m = on_work[on_work["caption_id"].isin(own_ids)]
        others = on_work[~on_work["caption_id"].isin(own_ids) & on_work["memorized"]]
        other = None
        if len(others):
            o = strongest_first(others).iloc[0]
            other = {"prompt": o["caption"], "seed": int(o["seed"]), "tiled_l2": float(o["tiled_l2"])}
        base = dict(work=str(w), prompt=own_prompts[i][0], prompt_source=own_prompts[i][1], samples=drawn, other_prompt=other,
                    training_copies=copies, prompts=plan)
        if m.empty:
            out.append(WorkVerdict(verdict=f"not reproduced in {drawn} samples", best_tiled_l2=None, best_phash=None,
                                   **base))
            continue
        hits = m[m["memorized"]]
        best = strongest_first(hits).iloc[0] if len(hits) else m.sort_values("tiled_l2").iloc[0]
        hashed = m.loc[m["phash_distance"] >= 0, "phash_distance"]   # -1: no hash (pixels unavailable)
        best_t, best_p = float(best["tiled_l2"]), int(hashed.min()) if len(hashed) else None
        rel = m["relative_l2"].dropna()
        by = None
        if len(hits):
            v = "reproduced"
            p = own_ids[best["caption_id"]]
            by = {"caption_id": p.caption_id, "prompt": p.prompt, "source": p.source, "seed": int(best["seed"]),
                  "generation_path": str(best["generation_path"])}
        elif (best_p is not None and best_p <= PHASH_CLOSE) or (len(rel) and float(rel.min()) < 1.0):
            v = "close"
        else:
            v = f"not reproduced in {drawn} samples"
        sscd = float(m["sscd_similarity"].max()) if "sscd_similarity" in m else None
        out.append(WorkVerdict(verdict=v, best_tiled_l2=best_t, best_phash=best_p, best_seed=int(best["seed"]),
                               best_exact=bool(best.get("exact", True)), kind=str(best["copy_kind"]),
                               share=float(best["copied_share"]), reproduced_by=by, sscd_similarity=sscd, **base))
    return out


MAX_NULL = 32   # calibration images searched: each costs one whole search


def null_images(null: Path | None, reconstruct: bool, say=print) -> list[tuple[str, Image.Image]]:
    """The calibration images, read and checked before any work: the null of the reconstruction search."""
    if not reconstruct:
        raise InputError("--null was given without --reconstruct", "add --reconstruct, or drop --null")
    if null is None:
        raise InputError("--reconstruct needs calibration images the model never saw (--null FOLDER)",
                         "give a folder of your own images that are not in the model's training set; imgextract "
                         "ships none, since a search that reconstructs anything proves nothing")
    null = Path(null)
    if not null.is_dir():
        raise InputError(f"--null {null} is not a folder", "give a folder of calibration images")
    files, bad = list_image_files(null)
    images = []
    for f in files:
        if len(images) > MAX_NULL:   # one past the cap, to say the rest were left out; no more is opened
            break
        try:
            images.append((f.name, open_rgb(f, min_side=4)))
        except BadImage as exc:
            bad.append({"path": str(f), "reason": exc.reason})
    for b in bad:
        say(f"unreadable calibration image {b['path']}: {b['reason']} (skipped)")
    if not images:
        raise InputError(f"--null {null} holds no readable image", "put calibration images (PNG/JPEG) in it")
    if len(images) > MAX_NULL:
        say(f"--null {null}: using the first {MAX_NULL} of its {len(files)} image files")
    return images[:MAX_NULL]
