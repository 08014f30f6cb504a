"""Release guard: does one generated image substantially replicate an indexed training image?

Built for the serving path: the index and its embedder are opened once (``Guard``), then each
image costs one embedding, one FAISS search and a tiled-L2 test against the k candidates,
well under a second on a CPU for a 100k-image index (see ``scripts/bench_guard.py``).

Vocabulary of the legal literature this serves:

* *memorized*: a near-exact copy of a substantial portion of a specific training image can be
  produced by the model (here: tiled L2 below the threshold);
* *regurgitated*: an ordinary prompt produced it;
* *extracted*: a targeted search (many samples, chosen prompts) produced it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imgextract.index.store import TrainingIndex, open_index
from imgextract.sources.images import open_rgb
from imgextract.sources.tables import LICENSE_COLUMNS, SOURCE_COLUMNS, role_column
from imgextract.copies import copy_words
from imgextract.replication import level_words
from imgextract.stages.scan import KIND_ORDER, ScanParams, TrainingImages, described, grade, match_image
from imgextract.copies import CopyRule

LEVEL_ORDER = {"replication": 2, "partial replication": 1, "none": 0}

ORIGINS = {"ordinary": "regurgitated", "targeted": "extracted"}


@dataclass
class GuardVerdict:
    memorized: bool
    term: str                 # "memorized" + (regurgitated | extracted) or "no substantial replication"
    train_id: int | None
    train_path: str | None
    source: str | None
    license: str | None
    tiled_l2: float | None
    phash_distance: int | None
    seconds: float
    exact: bool = True        # False: tiled_l2 is a thumbnail lower bound (far from the threshold)
    kind: str = "none"        # whole | portion | template | none (copies.py)
    share: float = 0.0        # copied share of the training image (copies.Judgement.share)
    template_members: int = 0
    sscd_similarity: float | None = None   # with a descriptor: the SSCD similarity to that training image
    template_mask: str = ""   # a published template's mask the copy was judged on (sources.templates)
    replication: str = "none"  # the graded level (replication.LEVELS): a near-copy the near-exact test refused is not clean
    replication_score: float = float("nan")

    @property
    def blocked(self) -> bool:
        """What a release guard refuses: a copy, or a replication the near-exact test refused."""
        return self.memorized or self.replication == "replication"

    @property
    def tested(self) -> bool:
        """False when the index could not answer (no candidate, or none with pixels): never a "no"."""
        return not self.term.startswith("not tested")

    def what(self) -> str:
        """The copy in words: what the report, check and guard all say."""
        return copy_words(self.kind, self.share, self.template_members, self.template_mask)

    def sentence(self) -> str:
        if self.term.startswith("not tested"):
            return self.term
        if not self.memorized and self.replication in ("replication", "partial replication"):
            lic = f", licence: {self.license}" if self.license else ""
            return (f"{self.replication} of training image #{self.train_id} ({self.source}{lic}): "
                    f"{level_words(self.replication, self.sscd_similarity)}; tiled L2 "
                    f"{'' if self.exact else '>= '}{self.tiled_l2:.3f}")
        if not self.memorized:
            return (f"no substantial replication: nearest training image {self.train_path} at tiled L2 "
                    f"{'' if self.exact else '>= '}{self.tiled_l2:.3f}")
        lic = f", licence: {self.license}" if self.license else ""
        sscd = f", SSCD similarity {self.sscd_similarity:.3f}" if self.sscd_similarity is not None else ""
        return (f"{self.term}: substantially replicates training image #{self.train_id} "
                f"({self.source}{lic}): {self.what()}; tiled L2 {self.tiled_l2:.3f}, "
                f"phash distance {self.phash_distance}{sscd}")



class Guard:
    """An index held open for repeated checks."""

    def __init__(self, index: str | Path | TrainingIndex, k: int = ScanParams.k, threshold: float = CopyRule.threshold,
                 grid: int = CopyRule.grid,
                 device: str = "cpu", min_share: float = CopyRule.min_share, descriptor: str | None = None):
        from imgextract.models.descriptors import resolved_spec
        self.index = index if isinstance(index, TrainingIndex) else open_index(index)
        self.params = ScanParams(index=str(self.index.path), k=k, threshold=threshold, grid=grid, relative_n=0,
                                 min_share=min_share, descriptor=resolved_spec(descriptor))
        self.describe = described(self.index, self.params, device)   # refused now if the index lacks it
        self.embedder = self.index.load_embedder(device)
        self.train = TrainingImages(self.index, capacity=1024)
        self.source_col = role_column(self.index.table.columns, SOURCE_COLUMNS)
        self.license_col = role_column(self.index.table.columns, LICENSE_COLUMNS)

    def match(self, image: Image.Image, sims, ids) -> list[dict]:
        """The copy verdict of ``image`` against its searched candidates (one row each, by rank)."""
        rows = match_image(image, sims, ids, self.index, self.train, self.params)
        if self.describe is not None:
            self.describe.annotate([image], [rows])
            grade(rows, self.describe.column)
        return rows

    def check(self, image: Image.Image, origin: str = "ordinary") -> GuardVerdict:
        """Verdict for one generated image; ``origin`` says how it was produced (ordinary|targeted)."""
        t0 = time.perf_counter()
        image = image.convert("RGB")
        sims, ids = self.index.search(self.embedder.embed([image]), self.params.k)
        matches = self.match(image, sims[0], ids[0])
        if matches and all(m["pixels"] == "unavailable" for m in matches):
            return GuardVerdict(False, "not tested: the nearest training images' pixels are unavailable (an "
                                "embeddings index built without --images)", None, None, None, None, None, None,
                                time.perf_counter() - t0)
        matches = [m for m in matches if m["pixels"] == "available"]
        if not matches:
            return GuardVerdict(False, f"not tested: index {self.index.path} returned no candidate (empty, or its "
                                "vectors cannot be searched)", None, None, None, None, None, None,
                                time.perf_counter() - t0)
        copies = [m for m in matches if m["memorized"]]
        graded = [m for m in matches if m["replication"] != "none"]
        best = max(copies, key=lambda m: (KIND_ORDER[m["copy_kind"]], m["copied_share"], -m["tiled_l2"])) \
            if copies else max(graded, key=lambda m: (LEVEL_ORDER[m["replication"]], m["replication_score"])) \
            if graded else min(matches, key=lambda m: m["tiled_l2"])
        row = self.index.table.iloc[best["train_id"]]
        source = str(row[self.source_col]) if self.source_col and row[self.source_col] is not None else best["train_path"]
        lic = str(row[self.license_col]) if self.license_col and row[self.license_col] is not None else None
        term = f"memorized ({ORIGINS.get(origin, origin)})" if best["memorized"] else "no substantial replication"
        return GuardVerdict(bool(best["memorized"]), term, int(best["train_id"]), best["train_path"], source, lic,
                            float(best["tiled_l2"]), int(best["phash_distance"]) if best["phash_distance"] >= 0
                            else None, time.perf_counter() - t0,
                            bool(best["exact"]), best["copy_kind"], float(best["copied_share"]),
                            len(best["template_members"]), best.get("sscd_similarity"), best.get("template_mask") or "",
                            best["replication"], float(best["replication_score"]))


def guard_file(image: str | Path, index: str | Path | TrainingIndex, origin: str = "ordinary", k: int = ScanParams.k,
               threshold: float = CopyRule.threshold, min_share: float = CopyRule.min_share,
               descriptor: str | None = None) -> GuardVerdict:
    """One-shot check of an image file, every argument checked first; for many images keep a
    ``Guard`` open instead."""
    from imgextract.errors import InputError
    from imgextract.sources.images import BadImage
    ScanParams(index=str(index), k=k, threshold=threshold, relative_n=0, min_share=min_share)   # checks itself
    try:
        img = open_rgb(Path(image), min_side=4)
    except BadImage as bad:
        raise InputError(f"cannot read image {image} ({bad.reason})", "pass a readable PNG/JPEG/WebP image") from bad
    return Guard(index, k=k, threshold=threshold, min_share=min_share, descriptor=descriptor).check(img, origin)
