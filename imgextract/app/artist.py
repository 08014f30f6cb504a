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

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
from PIL import Image

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.images import IMAGE_SUFFIXES, BadImage, list_image_files, open_rgb
from imgextract.sources.tables import read_captions
from imgextract.stages.scan import strongest_first
from imgextract.copies import CopyRule

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
    share: float = 0.0                 # its copied share of the work's detailed area
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
                f"a near-exact copy of {self.share:.0%} of the detail"
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


def _works(path: Path) -> tuple[list[Path], list[dict]]:
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


def find_training_copies(works: list[Path], index, threshold: float = CopyRule.threshold,
                         min_share: float = CopyRule.min_share,
                         say=print) -> list[list[dict] | None]:
    """Per work, its pixel-verified copies in the training index (strongest first), or None when the
    index cannot show pixels (an embeddings-only index: membership is then not tested, never "no")."""
    from imgextract.app.guard import Guard
    from imgextract.sources.tables import LICENSE_COLUMNS, SOURCE_COLUMNS, role_column
    from imgextract.stages.scan import KIND_ORDER
    guard = Guard(index, k=min(TRAINING_K, max(1, len(index.table))), threshold=threshold, min_share=min_share)
    tab = index.table
    src, lic = role_column(tab.columns, SOURCE_COLUMNS), role_column(tab.columns, LICENSE_COLUMNS)

    def text(row, col):
        v = row[col] if col else None
        return None if v is None or (isinstance(v, float) and v != v) else str(v)

    out = []
    for w in works:
        image = open_rgb(w, min_side=4)
        sims, ids = guard.index.search(guard.embedder.embed([image]), guard.params.k)
        matches = guard.match(image, sims[0], ids[0])
        if matches and all(m["pixels"] == "unavailable" for m in matches):
            out.append(None)
            continue
        hits = sorted((m for m in matches if m["memorized"]),
                      key=lambda m: (-KIND_ORDER[m["copy_kind"]], -m["copied_share"], m["tiled_l2"]))
        copies = []
        for m in hits:
            row = tab.iloc[m["train_id"]]
            copies.append({"id": int(m["train_id"]), "url": text(row, src), "caption": text(row, "caption"),
                           "license": text(row, lic), "kind": m["copy_kind"], "share": round(float(m["copied_share"]), 4),
                           "tiled_l2": round(float(m["tiled_l2"]), 4), "path": str(m["train_path"])})
        say(f"{w.name}: {len(copies)} training cop{'y' if len(copies) == 1 else 'ies'} in index {index.path.name}")
        out.append(copies)
    return out


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
    from collections import Counter
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


def reconstruct_unreproduced(loaded, record: dict, result: list[WorkVerdict], calibration, budget, out: Path,
                             say=print) -> dict | None:
    """``--reconstruct``: the search on every work no prompt reproduced, and once on the calibration images;
    the samples are kept under ``reconstruct/`` with their seeds."""
    from imgextract.progress import show
    from imgextract.stages.generate import png_bytes
    from imgextract.stages.reconstruct import meaning, null_rate, reconstruct
    todo = [v for v in result if v.verdict != "reproduced"]
    if not todo:
        return None
    s = record["sampling"]
    size, steps, guidance = (s["height"], s["width"]), s["steps"], s["guidance"]
    say(f"reconstruction search on {len(calibration)} calibration image(s) first: the null rate of this budget")
    null = show(null_rate(loaded, calibration, budget, steps, guidance, size), say)
    folder = out / "reconstruct"
    folder.mkdir(exist_ok=True)
    for v in todo:
        wid = work_id(next(i for i, w in enumerate(result) if w is v))
        say(f"reconstruction search on {Path(v.work).name}")
        attempt = show(reconstruct(loaded, open_rgb(Path(v.work), min_side=4), budget, steps, guidance, size, wid), say)
        paths = []
        for i, (im, seed) in enumerate(zip(attempt.images, attempt.seeds)):
            path = folder / f"{wid}_s{i:03d}.png"
            rundir.write_bytes_atomic(path, png_bytes(im, {"work": v.work, "search": "reconstruct", "seed": seed,
                                                          "budget": budget.record(), "steps": steps,
                                                          "guidance": guidance}))
            paths.append(str(path.resolve()))
        best = paths[attempt.seeds.index(attempt.seed)] if attempt.seed is not None else None
        v.reconstruction = {**attempt.record(), "search_steps": budget.steps, "samples": budget.samples,
                            "budget": budget.record(), "best_path": best, "sample_paths": paths,
                            "null": {k: null[k] for k in ("images", "reconstructed", "rate", "ci_low", "ci_high")},
                            "meaning": meaning(attempt.reconstructed, null)}
    return null


def run_check(works_path: Path, model: str, out: Path, caption: str | None = None,
              captions_file: Path | None = None, samples: int = 8, steps: int | None = None,
              guidance: float | None = None,
              seed: int = 0, device: str = "auto", size: tuple[int, int] | None = None,
              threshold: float = CopyRule.threshold, say=print, scheduler: str | None = None,
              dtype: str = "auto", training_index: str | None = None, reconstruct: bool = False,
              null: Path | None = None, budget=None, descriptor: str | None = None,
              reconstruct_steps: int | None = None) -> tuple[list[WorkVerdict], Path]:
    """The whole check; every argument is checked (model loaded, index opened, calibration images read)
    before anything is written."""
    from imgextract.app.commands import build_index, require_family, run_generation, run_scan
    from imgextract.models.families import require
    from imgextract.folders import check_out_folder, claim_out_folder
    from imgextract.index.store import is_index_dir, open_index
    from imgextract.models.descriptors import load_descriptor, resolved_spec, same_descriptor
    from imgextract.models.pipelines import load_pipeline
    from imgextract.progress import drain
    from imgextract.report.pages import write_check_page
    from imgextract.stages.generate import SamplingConfig, prepare_run
    from imgextract.stages.watermarks import Detector, run_watermarks

    index = Path(out) / "index"
    if index.exists() and not is_index_dir(index):
        raise InputError(f"{index} exists and is not an imgextract index; refusing to replace it",
                         "choose another --out folder")
    check_out_folder(Path(out))
    works, unreadable = _works(works_path)
    for b in unreadable:
        say(f"unreadable work {b['path']}: {b['reason']} (listed, not checked)")
    prompts = prompts_for(works, caption, captions_file, say=say)
    cfg = SamplingConfig(samples=samples, steps=steps, guidance=guidance, seed=seed, device=device, size=size,
                         batch_size=min(8, samples * len(works)), scheduler=scheduler, dtype=dtype)
    from imgextract.stages.generate import validate_sampling
    validate_sampling(cfg)
    trained_on = open_index(training_index) if training_index is not None else None
    descriptor = resolved_spec(descriptor)
    wanted = load_descriptor(descriptor, device).record() if descriptor else None
    calibration = null_images(null, reconstruct, say) if reconstruct or null is not None else []
    from imgextract.stages.reconstruct import Budget, validate_budget
    budget = budget or Budget(seed=seed, **({} if reconstruct_steps is None else {"steps": reconstruct_steps}))
    validate_budget(budget)
    if reconstruct:   # refused before the weights load wherever the files tell the family
        require_family(model, "check --reconstruct", "drop --reconstruct for this model")
    loaded = load_pipeline(model, device, dtype)
    if reconstruct:
        require(loaded.family, "check --reconstruct", model, "drop --reconstruct for this model")
    for source in sorted({s for _, s in prompts}):
        if source in ("file name", "sidecar text"):
            n = sum(s == source for _, s in prompts)
            say(f"no caption given: prompting {n} work(s) with their {source}"
                + (" (after the captions of their training copies, if any)" if trained_on is not None else ""))
    training = find_training_copies(works, trained_on, threshold, say=say) if trained_on is not None else None
    plans = [sampling_plan(i, own, training[i] if training else None, samples) for i, own in enumerate(prompts)]
    rows = [(p, i) for i, plan in enumerate(plans) for p in plan]
    out = Path(out)
    table = pa.table({"caption_id": [p.caption_id for p, _ in rows], "caption": [p.prompt for p, _ in rows],
                      "train_path": [str(works[i]) for _, i in rows],
                      "copies": pa.array([None] * len(rows), pa.int64()),
                      "samples": pa.array([p.samples for p, _ in rows], pa.int64())})
    run = out / "run"
    loaded, _, _ = prepare_run(Path(str(works_path)), model, run, cfg, captions=table, write=False, loaded=loaded)
    claim_out_folder(out)
    stored = (rundir.read_json(index / "embedder.json").get("descriptors") or {}).get("sscd") \
        if is_index_dir(index) else None
    if not is_index_dir(index) or pd.read_parquet(index / "images.parquet")["path"].tolist() != [str(w) for w in works] \
            or (wanted is not None and not same_descriptor(stored, wanted)):
        listing = out / "works.csv"
        out.mkdir(parents=True, exist_ok=True)
        with open(listing, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "caption"])
            writer.writerows([str(w), p] for w, (p, _) in zip(works, prompts))
        build_index(listing, str(index), "pixel", overwrite=True, progress=False, hashes=True,  # "close" reads them
                    descriptor=descriptor)
    run_generation(Path(str(works_path)), model, run, cfg, loaded=loaded, caption_table=table, say=say)
    run_scan(run, str(index), run, k=min(10, len(works)), threshold=threshold, grid=4, relative_n=0, say=say,
             descriptor=descriptor)
    drain(run_watermarks(run, run, Detector()))
    result = verdicts(run, works, prompts, plans, training)
    record = rundir.read_json(run / rundir.RUN_JSON)
    calibrated = None
    if reconstruct:
        calibrated = reconstruct_unreproduced(loaded, record, result, calibration, budget, out, say)
    result += [WorkVerdict(b["path"], "", "", "unreadable", None, None, 0, b["reason"]) for b in unreadable]
    rundir.write_json_atomic(out / "check.json", {
        "model": record["model"], "sampling": record["sampling"], "threshold": threshold,
        "training_index": str(trained_on.path) if trained_on is not None else None,
        "budget": f"samples x (1 + min(training copies, {EXTRA_CAP})) per work",
        "null_calibration": calibrated,
        "works": [v.record() for v in result]})
    page = write_check_page(out, run, result, [work_id(i) for i in range(len(result))], trained_on)
    return result, page
