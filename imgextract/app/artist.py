"""The artist's check: can this model reproduce my images?

Builds a private index of the artist's works, samples the model with a prompt per work,
scans the samples against the works, checks them for stock watermarks, and answers per work
in plain words that do not overclaim:

* **reproduced** — a sample is a copy by the copy verdict (``copies.py``): whole, a portion or a
  template, said with its share ("reproduced (a portion, 48%)");
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

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.images import IMAGE_SUFFIXES, BadImage, list_image_files, open_rgb
from imgextract.sources.tables import read_captions
from imgextract.stages.scan import strongest_first

PHASH_CLOSE = 10


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

    def record(self) -> dict:
        """check.json's row: what scripts read instead of parsing the page."""
        return {"work": self.work, "verdict": "not reproduced" if self.verdict.startswith("not reproduced")
                else self.verdict, "sentence": self.sentence(), "prompt": self.prompt,
                "prompt_source": self.prompt_source, "best_tiled_l2": self.best_tiled_l2,
                "best_tiled_l2_exact": self.best_exact,
                "best_phash_distance": self.best_phash, "best_seed": self.best_seed,
                "samples_drawn": self.samples, "reason": self.reason, "other_prompt_close": self.other_prompt,
                "copy_kind": self.kind, "copied_share": self.share}

    def sentence(self) -> str:
        if self.verdict == "unreadable":
            return f"unreadable: {Path(self.work).name} could not be read ({self.reason}); it was not checked"
        if self.verdict == "reproduced":
            how = "whole" if self.kind == "whole" else f"a {self.kind}, {self.share:.0%}"
            what = "a near-exact copy" if self.kind == "whole" else \
                f"a near-exact copy of {self.share:.0%} of the detail"
            return (f"reproduced ({how}): the model drew {what} of {Path(self.work).name} "
                    f"(tiled L2 {self.best_tiled_l2:.3f}) from the prompt \"{self.prompt}\"")
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


def verdicts(run: Path, works: list[Path], prompts: list[tuple[str, str]], samples: int,
             threshold: float) -> list[WorkVerdict]:
    """Per work, judged on the samples drawn for that work's own prompt; another prompt's sample
    that copies the work is kept apart, as its own finding."""
    matches = pd.read_parquet(run / rundir.MATCHES)
    out = []
    for i, (w, (prompt, source)) in enumerate(zip(works, prompts)):
        on_work = matches[matches["train_path"] == str(w)]
        m = on_work[on_work["caption_id"] == work_id(i)]
        others = on_work[(on_work["caption_id"] != work_id(i)) & on_work["memorized"]]
        other = None
        if len(others):
            o = strongest_first(others).iloc[0]
            other = {"prompt": o["caption"], "seed": int(o["seed"]), "tiled_l2": float(o["tiled_l2"])}
        if m.empty:
            out.append(WorkVerdict(str(w), prompt, source, f"not reproduced in {samples} samples", None, None, samples,
                                   other_prompt=other))
            continue
        hits = m[m["memorized"]]
        best = strongest_first(hits).iloc[0] if len(hits) else m.sort_values("tiled_l2").iloc[0]
        hashed = m.loc[m["phash_distance"] >= 0, "phash_distance"]   # -1: no hash (pixels unavailable)
        best_t, best_p = float(best["tiled_l2"]), int(hashed.min()) if len(hashed) else None
        rel = m["relative_l2"].dropna()
        if len(hits):
            v = "reproduced"
        elif (best_p is not None and best_p <= PHASH_CLOSE) or (len(rel) and float(rel.min()) < 1.0):
            v = "close"
        else:
            v = f"not reproduced in {samples} samples"
        out.append(WorkVerdict(str(w), prompt, source, v, best_t, best_p, samples, best_seed=int(best["seed"]),
                               other_prompt=other, best_exact=bool(best.get("exact", True)),
                               kind=str(best["copy_kind"]), share=float(best["copied_share"])))
    return out


def run_check(works_path: Path, model: str, out: Path, caption: str | None = None,
              captions_file: Path | None = None, samples: int = 8, steps: int = 50, guidance: float = 7.5,
              seed: int = 0, device: str = "auto", size: tuple[int, int] | None = None,
              threshold: float = 0.15, say=print, scheduler: str | None = None,
              dtype: str = "auto") -> tuple[list[WorkVerdict], Path]:
    from imgextract.app.commands import build_index, run_generation, run_scan
    from imgextract.folders import check_out_folder, claim_out_folder
    from imgextract.index.store import is_index_dir
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
    for source in sorted({s for _, s in prompts}):
        if source in ("file name", "sidecar text"):
            n = sum(s == source for _, s in prompts)
            say(f"no caption given: prompting {n} work(s) with their {source}")
    out = Path(out)
    table = pa.table({"caption_id": [work_id(i) for i in range(len(works))], "caption": [p for p, _ in prompts],
                      "train_path": [str(w) for w in works], "copies": pa.array([None] * len(works), pa.int64())})
    cfg = SamplingConfig(samples=samples, steps=steps, guidance=guidance, seed=seed, device=device, size=size,
                         batch_size=min(8, samples * len(works)), scheduler=scheduler, dtype=dtype)
    run = out / "run"
    loaded, _, _ = prepare_run(Path(str(works_path)), model, run, cfg, captions=table, write=False)
    claim_out_folder(out)
    if not is_index_dir(index) or pd.read_parquet(index / "images.parquet")["path"].tolist() != [str(w) for w in works]:
        listing = out / "works.csv"
        out.mkdir(parents=True, exist_ok=True)
        with open(listing, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "caption"])
            writer.writerows([str(w), p] for w, (p, _) in zip(works, prompts))
        build_index(listing, str(index), "pixel", overwrite=True, progress=False, hashes=True)  # "close" reads them
    run_generation(Path(str(works_path)), model, run, cfg, loaded=loaded, caption_table=table, say=say)
    run_scan(run, str(index), run, k=min(10, len(works)), threshold=threshold, grid=4, relative_n=0, say=say)
    drain(run_watermarks(run, run, Detector()))
    result = verdicts(run, works, prompts, samples, threshold)
    result += [WorkVerdict(b["path"], "", "", "unreadable", None, None, 0, b["reason"]) for b in unreadable]
    record = rundir.read_json(run / rundir.RUN_JSON)
    rundir.write_json_atomic(out / "check.json", {
        "model": record["model"], "sampling": record["sampling"], "threshold": threshold,
        "works": [v.record() for v in result]})
    page = write_check_page(out, run, result, [work_id(i) for i in range(len(result))])
    return result, page
