"""The local engine: this process draws shard N+1 while one thread tests and writes shard N,
so PNG encoding, hashing and the tests overlap the UNet."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from imgextract.stages.generate import ShardDrawer
from imgextract.stages.tester import ShardTester, SweepSettings


def check_available() -> None:
    """Nothing to install: the local engine is always there."""


def prepare(engine):
    return engine, None


def describe(engine) -> str | None:
    return None


def sweep(out: Path, todo: list[int], settings: SweepSettings, engine, loaded=None) -> Iterator[dict]:
    """Draw and test the unfinished shards ``todo``; yields each finished shard's counts.
    ``loaded``: the run's model, already loaded here (else loaded from ``run.json``)."""
    draw = ShardDrawer(out, loaded)
    test = ShardTester(out, settings)
    with ThreadPoolExecutor(max_workers=1) as finisher:
        pending = None
        for number in todo:
            drawn = draw(number)
            if pending is not None:
                yield pending.result()
            pending = finisher.submit(test, drawn)
        if pending is not None:
            yield pending.result()


PROCESS_MIN_IMAGES = 2048   # below this, a spawned process's start (~2 s of imports) outweighs what it saves


def part_processes(job, todo: list[int]) -> int:
    """How many processes build the parts ``todo`` side by side. Asked for (``--processes``), or else
    one per core when the embedder works per image on the CPU (the pixel descriptor: its work per
    image is short C calls with Python between them, which threads in one process take turns at,
    under the GIL), there are two parts or more, and enough images to repay the processes' start;
    1 otherwise: threads in this process (CLIP and SSCD batches already fill the cores)."""
    if job.processes is not None:
        return max(1, min(job.processes, len(todo)))
    images = sum(job.plan.parts[i].size for i in todo)
    if not getattr(job.embedder, "per_image", False) or job.descriptor is not None or images < PROCESS_MIN_IMAGES:
        return 1
    return max(1, min(job.workers, len(todo)))


def build_parts(job, tmp: Path, todo: list[int], engine) -> Iterator:
    """An index build's unfinished parts ``todo`` on this machine: ``index.build.PartBuilder`` on a
    thread pool in this process (progress per image), or the same callable in spawned processes,
    one part each at a time (progress per part), as img2dataset's multiprocessing distributor does."""
    from imgextract.index.build import local_parts
    n = part_processes(job, todo)
    if n <= 1:
        yield from local_parts(job, tmp, todo)
    else:
        yield from _parts_in_processes(job, tmp, todo, n)


_BUILDER = None   # in a part process: its PartBuilder, made once by _start_part_process


def _start_part_process(tmp: str, settings: dict, batch_size: int, threads: int, device: str) -> None:
    global _BUILDER
    import sys

    from threadpoolctl import threadpool_limits

    from imgextract.index.build import PartBuilder
    threadpool_limits(limits=threads)    # the processes already fill the cores: no nested BLAS/OpenMP threads
    _BUILDER = PartBuilder.where_it_runs(Path(tmp), settings, batch_size, _decoders(threads), device)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _decoders(threads: int) -> int:
    """Decoding threads of a part process: none when it has one core (images decoded where they are
    embedded, no hand-over between threads), else one per core it has."""
    return 0 if threads <= 1 else threads


def _build_part_here(i: int) -> int:
    return _BUILDER(i)


def _parts_in_processes(job, tmp: Path, todo: list[int], n: int) -> Iterator:
    """``todo`` on ``n`` spawned processes. A process that dies (killed, out of memory) leaves its part
    without ``done.json``: the parts still unfinished are then built in this process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from imgextract.index.build import PARTS, local_parts
    from imgextract.progress import Note, Step
    sizes = [p.size for p in job.plan.parts]
    total, done = sum(sizes), sum(sizes) - sum(sizes[i] for i in todo)
    what = f"index {job.dest.name}"
    yield Step(what, done, total, "img")
    threads = max(1, job.workers // n)
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_start_part_process,
                               initargs=(str(tmp), job.settings, job.batch_size, threads,
                                         getattr(job.embedder, "device", "cpu")))
    finished = False
    try:
        for part in as_completed([pool.submit(_build_part_here, i) for i in todo]):
            done += sizes[part.result()]
            yield Step(what, min(total, done), total, "img")
        finished = True
    except BrokenProcessPool:
        left = [i for i in todo if not (tmp / PARTS / f"{i:05d}.done.json").is_file()]
        yield Note(f"a part process of index {job.dest.name} died: its {len(left)} unfinished part(s) are built "
                   "in this process")
        yield from local_parts(job, tmp, left)
    finally:
        # every part written: the idle processes exit while the index is assembled, unwaited for
        pool.shutdown(wait=not finished, cancel_futures=True)
