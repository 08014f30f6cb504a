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


def build_parts(job, tmp: Path, todo: list[int], engine) -> Iterator:
    """An index build's unfinished parts ``todo``, in this process (``index.build.PartBuilder`` on
    a thread pool); yields progress per image."""
    from imgextract.index.build import local_parts
    yield from local_parts(job, tmp, todo)
