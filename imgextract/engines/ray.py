"""The Ray engine: the same sweep as the local engine, mapped over a cluster with Ray Data.

One Ray Data pipeline over the run's unfinished shards::

    shard numbers ─► map_batches(DrawWorker, ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker)
                  ─► map_batches(TestWorker, ActorPoolStrategy(size=test_workers), num_cpus=test_cpus)
                  ─► the driver counts finished shards (progress)

A draw worker holds a ``generate.ShardDrawer`` (the pipeline loaded once; the same batches as
the local engine, so the same bytes); it writes nothing. A test worker holds a
``tester.ShardTester`` (the index opened once, memory-mapped), which writes the shard's files
and its manifest last. Ray Data streams the two stages side by side, so tests
overlap generation. A killed worker is restarted by Ray and its shard is drawn again from the
start; nothing was written for it or the same bytes are written again, and the manifest is
written once, whole, so every sample ends up exactly once. The run folder must be on a file
system every node sees (NFS, a mounted bucket), and imgextract installed on every node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from imgextract.errors import InputError
from imgextract.models.pipelines import quiet_libraries
from imgextract.stages.generate import Drawn, DrawnShard, ShardDrawer
from imgextract.stages.tester import ShardTester


def check_available() -> None:
    """Refuse a Ray config before any work when Ray is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError("[engine] kind = \"ray\" needs Ray, which is not installed",
                         "pip install 'imgextract[ray]' (or use kind = \"local\")") from exc


def connect(engine) -> None:
    """Join the cluster at ``engine.address``, or start a local Ray (``engine.cpus`` cores) when none is given."""
    import ray
    if ray.is_initialized():
        return
    args = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
    try:
        if engine.address:
            ray.init(address=engine.address, **args)
        else:
            ray.init(num_cpus=engine.cpus, **args)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"[engine] address {engine.address!r}: cannot connect to Ray ({exc})",
                         "start the cluster (`ray start --head`) and give its address, or leave address out "
                         "to start a local Ray") from exc
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False   # imgextract prints its own progress
    ctx.print_on_execution_start = False


def _pack(shard: DrawnShard) -> dict:
    """A drawn shard as one row: the PNGs concatenated in one binary cell, their rows as JSON."""
    drawn = shard.drawn
    return {"shard": shard.number, "unet_s": shard.unet_s,
            "meta": json.dumps([{"meta": d.meta, "rel": d.rel} for d in drawn]),
            "sizes": json.dumps([len(d.data) for d in drawn]), "blob": b"".join(d.data for d in drawn)}


def _unpack(number, unet_s, meta: str, sizes: str, blob: bytes) -> DrawnShard:
    out, at = [], 0
    for m, n in zip(json.loads(meta), json.loads(sizes)):
        out.append(Drawn(m["meta"], m["rel"], bytes(blob[at:at + n])))
        at += n
    return DrawnShard(int(number), out, float(unet_s))


COLUMNS = ("shard", "unet_s", "meta", "sizes", "blob")


class DrawWorker:
    """One loaded pipeline per worker (per GPU): the engines' ShardDrawer; draws whole shards, writes nothing."""

    def __init__(self, out: str):
        quiet_libraries()
        self.draw = ShardDrawer(Path(out))

    def __call__(self, batch: dict) -> dict:
        rows = [_pack(self.draw(int(n))) for n in batch["shard"]]
        return {"shard": np.array([r["shard"] for r in rows]), "unet_s": np.array([r["unet_s"] for r in rows]),
                **{k: np.array([r[k] for r in rows], dtype=object) for k in ("meta", "sizes", "blob")}}


class TestWorker:
    """The index opened once per worker: the engines' ShardTester; tests, keeps and writes whole shards."""

    def __init__(self, out: str, settings, threads: int):
        self.test = ShardTester(Path(out), settings, device="cpu", workers=threads)

    def __call__(self, batch: dict) -> dict:
        done = [self.test(_unpack(*row)) for row in zip(*(batch[k] for k in COLUMNS))]
        return {k: np.array([d[k] for d in done]) for k in ("shard", "samples", "kept", "memorized", "unet_s")}


class PartWorker:
    """One index-build worker: ``index.build.PartBuilder`` rebuilt from the build's settings (the
    source planned again, the embedder loaded once, on this worker's GPU when it has one); builds
    whole parts into the shared temporary folder, by part number."""

    def __init__(self, tmp: str, settings: dict, batch_size: int, threads: int, device: str):
        quiet_libraries()
        from imgextract.index.build import PartBuilder
        self.build = PartBuilder.where_it_runs(Path(tmp), settings, batch_size, threads, device)

    def __call__(self, batch: dict) -> dict:
        return {"part": np.array([self.build(int(i)) for i in batch["part"]])}


def build_parts(job, tmp: Path, todo: list[int], engine) -> Iterator:
    """An index build's unfinished parts on Ray actors (``engine.workers`` of them, each with
    ``gpus_per_worker`` GPUs and ``test_cpus`` threads); yields progress as parts land. The
    driver assembles them as a local build does, so the index is the same."""
    import ray

    from imgextract.progress import Step
    connect(engine)
    sizes = [p.size for p in job.plan.parts]
    total, done = sum(sizes), sum(sizes) - sum(sizes[i] for i in todo)
    what = f"index {job.dest.name}"
    if total:
        yield Step(what, done, total, "img")
    if not todo:
        return
    gpus = engine.gpus_per_worker or 0
    ds = ray.data.from_items([{"part": i} for i in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(PartWorker, fn_constructor_kwargs={
        "tmp": str(Path(tmp).resolve()), "settings": job.settings, "batch_size": job.batch_size,
        "threads": engine.test_cpus, "device": "cuda" if gpus > 0 else "cpu"},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=engine.workers), num_gpus=gpus,
        num_cpus=engine.test_cpus, batch_format="numpy")
    for row in ds.iter_rows():
        done += sizes[int(row["part"])]
        yield Step(what, min(total, done), total, "img")


def prepare(engine):
    """Connect, and settle what "auto" means on this cluster: one GPU per draw worker when it has GPUs.
    Returns the engine and the device its draw workers use (recorded in run.json: the driver may
    have no GPU)."""
    import dataclasses
    import ray
    check_available()
    connect(engine)
    if engine.gpus_per_worker is None:
        engine = dataclasses.replace(engine, gpus_per_worker=1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
    return engine, "cuda" if (engine.gpus_per_worker or 0) > 0 else "cpu"


def describe(engine) -> str:
    return (f"ray: {engine.workers} draw worker(s) x {engine.gpus_per_worker} GPU, "
            f"{engine.test_workers or engine.workers} test worker(s) x {engine.test_cpus} CPU")


def sweep(out: Path, todo: list[int], settings, engine, loaded=None) -> Iterator[dict]:
    """The same shards as the local engine, drawn and tested by Ray actors (``loaded`` is not used:
    each draw worker loads its own)."""
    """Run the unfinished shards ``todo`` on Ray; yields each finished shard's counts as it lands."""
    import ray
    connect(engine)
    gpus = engine.gpus_per_worker or 0
    ds = ray.data.from_items([{"shard": n} for n in todo], override_num_blocks=max(1, len(todo)))
    ds = ds.map_batches(DrawWorker, fn_constructor_kwargs={"out": str(Path(out).resolve())}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=engine.workers), num_gpus=gpus,
                        num_cpus=1, batch_format="numpy")
    ds = ds.map_batches(TestWorker, fn_constructor_kwargs={"out": str(Path(out).resolve()), "settings": settings,
                                                           "threads": engine.test_cpus},
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=engine.test_workers or engine.workers),
                        num_cpus=engine.test_cpus, batch_format="numpy")
    for row in ds.iter_rows():
        yield {k: (float(v) if k == "unet_s" else int(v)) for k, v in row.items()}

