"""What a scan will do: the shards of a run, or of a plain folder resumed by file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.sources.images import list_image_files

FOLDER_SHARD = 512


@dataclass
class ScanPlan:
    """What a scan will do: shards still to scan, every shard whose rows count, and what it noticed."""

    todo: list[tuple[str, pd.DataFrame]]
    shards: list[str]
    generations: int
    notes: list[str]
    current: dict[str, tuple[int, int]] | None = None    # plain folder: path → (size, mtime_ns)
    incomplete: dict | None = None                       # run still being generated
    listed_bad: list[dict] | None = None


def plan_scan(generations: Path, work: Path) -> ScanPlan:
    generations = Path(generations)
    if not generations.exists():
        raise InputError(f"generations {generations} do not exist", "pass a run folder or a folder of images")
    if rundir.is_run_dir(generations):
        return _plan_run(generations, work)
    if not generations.is_dir():
        raise InputError(f"generations {generations} is not a folder", "pass a run folder or a folder of images")
    return _plan_folder(generations, work)


def _plan_run(run: Path, work: Path) -> ScanPlan:
    samples = rundir.read_samples(run)
    if samples.empty:
        raise InputError(f"run {run} has no finished sample shard",
                         "run `imgextract generate` into it first (it resumes)")
    shards = [(name, df.reset_index(drop=True)) for name, df in samples.groupby(
        samples["file"].str.split("/").str[1], sort=True)]
    planned = rundir.planned_shards(run)
    notes, incomplete = [], None
    if planned and len(shards) < planned:
        incomplete = {"shards_finished": len(shards), "shards_planned": planned}
        notes.append(f"run {run} is incomplete: {len(shards)} of {planned} shards generated; scanning those "
                     "(scan again when `imgextract generate` has finished)")
    todo = [(n, rows) for n, rows in shards if not (work / f"{n}.parquet").is_file()]
    if "kept" in samples and todo:  # a sweep kept only the evidence: the other samples' pixels are gone
        dropped = sum(int((~rows["kept"].fillna(True).astype(bool)).sum()) for _, rows in todo)
        if dropped:
            todo = [(n, rows[rows["kept"].fillna(True).astype(bool)].reset_index(drop=True)) for n, rows in todo]
            notes.append(f"{dropped} sample(s) of this run were not kept (--keep evidence): scanning with these "
                         "parameters tests the kept samples only; the others keep their recorded matches under "
                         "the sweep's parameters and can be redrawn from their seeds")
    return ScanPlan(todo, [n for n, _ in shards], len(samples), notes, incomplete=incomplete)


def _plan_folder(folder: Path, work: Path) -> ScanPlan:
    """Resume by file: what was scanned before (same path, size, mtime) is kept, new files are
    scanned, vanished or changed files are dropped from the results, and the user is told."""
    files, bad = list_image_files(folder)
    if not files and not bad:
        raise InputError(f"folder {folder} holds no images", "point at the folder of generated images")
    current = {}
    for f in files:
        st = f.stat()
        current[str(f)] = (st.st_size, st.st_mtime_ns)
    done_names, done = [], {}
    for listing in sorted(work.glob("shard-*.files.parquet")):
        name = listing.name[: -len(".files.parquet")]
        if (work / f"{name}.parquet").is_file():
            done_names.append(name)
            t = pq.read_table(listing).to_pandas()
            done.update({p: (int(sz), int(mt)) for p, sz, mt in zip(t["path"], t["size"], t["mtime_ns"])})
    new = [p for p in current if done.get(p) != current[p]]
    gone = [p for p in done if p not in current]
    changed = [p for p in new if p in done]
    notes = []
    if done:
        notes.append(f"resuming: {len(current) - len(new)} file(s) already scanned, {len(new) - len(changed)} new, "
                     f"{len(changed)} changed (rescanned), {len(gone)} gone (dropped from the results)")
    first = max((int(n.split("-")[1]) for n in done_names), default=-1) + 1
    todo = []
    for j, i in enumerate(range(0, len(new), FOLDER_SHARD)):
        chunk = new[i:i + FOLDER_SHARD]
        todo.append((rundir.shard_name(first + j), pd.DataFrame({
            "generation_path": chunk, "size": [current[p][0] for p in chunk],
            "mtime_ns": [current[p][1] for p in chunk]})))
    return ScanPlan(todo, done_names + [n for n, _ in todo], len(current) + len(bad), notes, current=current,
                    listed_bad=bad)


def default_out(generations: Path) -> Path:
    generations = Path(generations)
    return generations if rundir.is_run_dir(generations) else generations.with_name(generations.name + "-scan")
