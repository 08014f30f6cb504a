"""The sweep stage: each shard of samples is tested where it was drawn, then written once.

At the paper's scale (350,000 captions x 500 samples at 512 px: ~175M PNGs, ~70 TB) writing
every sample and reading it back for the tests is the cost that decides whether a sweep can
run at all. So a sweep hands each shard's freshly drawn samples, still in memory, to a
:class:`ShardTester`, which does everything the audit needs from their pixels: the scan (embed,
candidates from the index, tiled L2, hashes), the clique test of every caption (a shard holds
whole captions), watermark OCR when asked, and the decision of what to keep. Then it writes, in this order: the kept
PNGs, the scan part, the clique part, the shard's embeddings, and the manifest last (a shard is
done when its manifest exists, as for ``generate``).

``keep``:

* ``all`` keeps every PNG, as ``generate`` does;
* ``evidence`` keeps the PNG of a sample only when it is evidence: memorized, within ``margin``
  of the threshold (its closest training image is a near miss a reviewer should see), a member
  of a flagged clique, or (with ``[watermarks]``) carrying a stock-photo mark. Every sample still
  keeps its manifest row (its seed: ``imgextract sample`` redraws it), its hashes and best match (manifest), all its
  candidates (scan part) and its embedding (``samples/shard-N.emb.npy``). Dropping pixels rather
  than packing them in tars is what makes the sweep fit on disk: a tar of PNGs is as large as the PNGs.

Every engine (:mod:`imgextract.engines`) is handed the same two per-shard callables,
``generate.ShardDrawer`` and :class:`ShardTester`: a shard number goes in, a drawn shard comes out
of the first, and the second tests and writes it. Only the orchestration differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.hashes import HASHES
from imgextract.index.store import open_index
from imgextract.stages.cliques import CLIQUES, CliqueParams, clique_of_images, clique_row, confirm
from imgextract.stages.generate import DrawnShard, manifest_path
from imgextract.stages.scan import ScanParams, TrainingImages, described, scan_shard, strongest_first
from imgextract.stages.watermarks import WATERMARKS, Detector, load_brands, load_templates

KEEP_MODES = ("auto", "all", "evidence")
AUTO_KEEP_LIMIT = 100_000   # `auto`: keep every PNG below this many planned samples, else the evidence only
EVIDENCE_MARGIN = 0.05      # a sample whose best tiled L2 is below threshold + margin is kept as a near miss
CLIQUE_PARTS = "cliques"    # RUN/cliques/shard-N.parquet: each shard's captions, before assembly
WATERMARK_PARTS = "watermarks"  # RUN/watermarks/shard-N.parquet: each shard's samples, before assembly
EMBEDDINGS = ".emb.npy"     # RUN/samples/shard-N.emb.npy: float16, one row per manifest row (NaN: unreadable)


@dataclass(frozen=True)
class SweepSettings:
    """What a test worker needs besides the run folder: scan and clique parameters, what to keep."""

    scan: ScanParams
    cliques: CliqueParams | None = None
    keep: str = "all"
    margin: float = EVIDENCE_MARGIN
    watermarks: tuple | None = None   # (brands file or None, templates folder or None): OCR every sample


def check_keep(keep: str) -> str:
    if keep not in KEEP_MODES:
        raise InputError(f"--keep {keep!r}", f"use one of {', '.join(KEEP_MODES)}")
    return keep


def resolve_keep(keep: str, planned_samples: int) -> str:
    if check_keep(keep) == "auto":
        return "all" if planned_samples < AUTO_KEEP_LIMIT else "evidence"
    return keep


def storage_record(settings: SweepSettings) -> dict | None:
    """``run.json``'s "storage" entry; None for keep=all, so such a run reads like one of `generate`."""
    if settings.keep == "all":
        return None
    return {"keep": settings.keep, "margin": settings.margin, "threshold": settings.scan.threshold,
            "cliques": asdict(settings.cliques) if settings.cliques else None,
            "watermarks": settings.watermarks is not None,
            "rule": "a sample's PNG is kept when it is memorized, its best tiled L2 is below threshold + margin, "
                    "or it is a member of a flagged clique; every sample keeps its manifest row, hashes, "
                    "candidates and embedding"}


def align_shard_size(shard_size: int, samples: int) -> int:
    """A sweep's shards hold whole captions (the clique test needs all of a caption's samples)."""
    return max(1, round(shard_size / samples)) * samples


class ShardTester:
    """What a test worker holds for the whole sweep: the index (memory-mapped, opened once), its
    embedder and a training-image cache; :meth:`finish` tests and writes one drawn shard."""

    def __init__(self, out: Path, settings: SweepSettings, device: str = "auto", workers: int | None = None):
        self.out, self.settings, self.workers = Path(out), settings, workers
        self.index = open_index(settings.scan.index)
        self.embedder = self.index.load_embedder(device)
        self.train = TrainingImages(self.index)
        self.describe = described(self.index, settings.scan, device)
        self.work = self.out / rundir.SCAN / settings.scan.key(self.index)
        self.work.mkdir(parents=True, exist_ok=True)
        self.detector = None
        if settings.watermarks is not None:
            brands, templates = settings.watermarks
            self.detector = Detector(brands=load_brands(Path(brands) if brands else None),
                                     templates=load_templates(Path(templates) if templates else None))
        rundir.write_json_atomic(self.work / "params.json", {**asdict(settings.scan), "embedder": self.index.embedder})

    def __call__(self, shard: DrawnShard) -> dict:
        """Test one drawn shard in memory, keep what the mode says, write it, manifest last; returns
        its counts (samples, kept, memorized, unet_s)."""
        return {**self.finish(shard.number, shard.drawn), "unet_s": shard.unet_s}

    def finish(self, number: int, drawn: list) -> dict:
        """Test one shard's samples (:class:`~imgextract.stages.generate.Drawn`) in memory, keep what the
        mode says, write the manifest last."""
        s = self.settings
        name = rundir.shard_name(number)
        paths = [str((self.out / d.rel).resolve()) for d in drawn]
        rows = pd.DataFrame([{**d.meta, "generation_path": p} for d, p in zip(drawn, paths)])
        collect: dict = {}
        matches, skipped = scan_shard(rows, self.index, self.embedder, self.train, s.scan, self.workers,
                                      data=[d.data for d in drawn], collect=collect, describe=self.describe)
        gens = collect["generations"]
        cliques = self._cliques(rows, paths, gens)
        marks = self._watermarks(paths, gens)
        keep = self._evidence(matches, cliques, paths)
        if marks is not None:  # a reproduced stock-photo mark is a finding: its sample is evidence
            keep.update(marks.loc[marks["watermark"].fillna(False).astype(bool), "path"])
        for d, p in zip(drawn, paths):
            if s.keep == "all" or p in keep:
                rundir.write_bytes_atomic(self.out / d.rel, d.data)
        rundir.write_json_atomic(self.work / f"{name}.skipped.json", skipped)
        rundir.write_parquet_atomic(self.work / f"{name}.parquet", matches)
        if cliques is not None:
            rundir.write_parquet_atomic(self.out / CLIQUE_PARTS / f"{name}.parquet", cliques)
        if marks is not None:
            rundir.write_parquet_atomic(self.out / WATERMARK_PARTS / f"{name}.parquet", marks)
        self._write_embeddings(name, collect["vectors"])
        best = (matches[matches["pixels"] == "available"].sort_values("tiled_l2")
                .drop_duplicates("generation_path").set_index("generation_path"))
        kinds = strongest_first(matches[matches["memorized"]]).drop_duplicates("generation_path") \
            .set_index("generation_path")["copy_kind"]
        manifest = []
        for d, p, g in zip(drawn, paths, gens):
            b = best.loc[p] if p in best.index else None
            manifest.append({**d.meta, "file": d.rel, "sha256": d.sha256, "kept": s.keep == "all" or p in keep,
                             **{h: (g.hashes[h] if g is not None else None) for h in HASHES},
                             "best_train_id": int(b["train_id"]) if b is not None else None,
                             "best_tiled_l2": float(b["tiled_l2"]) if b is not None else None,
                             "memorized": p in kinds.index, "copy_kind": kinds.get(p, "none")})
        rundir.write_parquet_atomic(manifest_path(self.out, number), pa.Table.from_pylist(manifest))
        return {"shard": number, "samples": len(drawn), "kept": sum(r["kept"] for r in manifest),
                "memorized": sum(r["memorized"] for r in manifest)}

    def _cliques(self, rows: pd.DataFrame, paths: list[str], gens: list) -> pd.DataFrame | None:
        params = self.settings.cliques
        if params is None:
            return None
        out = []
        for cid, idx in rows.groupby("caption_id", sort=True).indices.items():
            idx = sorted(idx, key=lambda i: rows["sample_index"].iat[i])
            res = clique_of_images([paths[i] for i in idx],
                                   [gens[i].pixels if gens[i] is not None else None for i in idx], params)
            out.append(clique_row(cid, rows["caption"].iat[idx[0]], res, params))
        return pd.DataFrame(out)

    def _watermarks(self, paths: list[str], gens: list) -> pd.DataFrame | None:
        """The watermark detector on every readable sample of the shard (rows as `imgextract watermarks`)."""
        if self.detector is None:
            return None
        return pd.DataFrame([self.detector.row(p, g.image if g is not None else None, "unreadable")
                             for p, g in zip(paths, gens)])

    def _evidence(self, matches: pd.DataFrame, cliques: pd.DataFrame | None, paths: list[str]) -> set[str]:
        s = self.settings
        near = matches[(matches["memorized"]) | (matches["tiled_l2"] < s.scan.threshold + s.margin)]
        keep = set(near["generation_path"])
        if cliques is not None:
            for flagged, members in zip(cliques["flagged"], cliques["members"]):
                if flagged:
                    keep.update(members)
        return keep & set(paths)

    def _write_embeddings(self, name: str, vectors: list) -> None:
        dim = next((len(v) for v in vectors if v is not None), self.index.embedder.get("dimension", 0))
        arr = np.full((len(vectors), dim), np.nan, np.float16)
        for i, v in enumerate(vectors):
            if v is not None:
                arr[i] = v
        rundir.write_npy_atomic(self.out / rundir.SAMPLES / f"{name}{EMBEDDINGS}", arr)


def assemble_cliques(out: Path) -> pd.DataFrame | None:
    """``cliques.parquet`` from the shards' parts, confirmed against the latest scan."""
    out = Path(out)
    parts = sorted((out / CLIQUE_PARTS).glob("shard-*.parquet"))
    if not parts:
        return None
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default").to_pandas()
    table = confirm(table.sort_values("caption_id", kind="stable").reset_index(drop=True), out / rundir.MATCHES)
    rundir.write_parquet_atomic(out / CLIQUES, table)
    return table


def assemble_watermarks(out: Path) -> pd.DataFrame | None:
    """``watermarks.parquet`` from the shards' parts; the scan's assembly then folds it into matches and summary."""
    out = Path(out)
    parts = sorted((out / WATERMARK_PARTS).glob("shard-*.parquet"))
    if not parts:
        return None
    table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    rundir.write_parquet_atomic(out / WATERMARKS, table)
    return table.to_pandas()

