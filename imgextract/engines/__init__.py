"""Where a sweep's shards run: this process, or a Ray cluster. Chosen from a table, not an ``if``.

Every engine has one signature, ``sweep(out, todo, settings, engine, loaded=None)``, yielding each
finished shard's counts as it lands, and every engine runs the same two per-shard callables,
``stages.generate.ShardDrawer`` (shard number → drawn shard) and ``stages.tester.ShardTester``
(drawn shard → files written, manifest last), as img2dataset hands one downloader to each of its
distributors. Index builds go the same way: ``build_parts(job, tmp, todo, engine)`` runs
``index.build.PartBuilder`` (part number → the part's files) on every unfinished part. Engines
hold no locks and show nothing: the app does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import Optional

from imgextract.errors import InputError

ENGINES = {"local": "imgextract.engines.local", "ray": "imgextract.engines.ray"}  # kind → module with sweep()
ENGINE_KINDS = tuple(ENGINES)


@dataclass(frozen=True)
class EngineConfig:
    """``[engine]`` of a run config: where the sweep's stages run."""

    kind: str = "local"                  # local | ray
    address: Optional[str] = None        # ray: a cluster address ("auto", "ray://head:10001"); None starts a local Ray
    workers: int = 1                     # ray: draw workers (one loaded pipeline each)
    gpus_per_worker: Optional[float] = None  # ray: GPUs per draw worker; None: 1 when the cluster has GPUs, else 0
    test_workers: Optional[int] = None   # ray: test workers (index opened once each); None: as many as draw workers
    test_cpus: int = 1                   # ray: CPU cores per test worker (its thread pool)
    cpus: Optional[int] = None           # ray without address: cores of the local Ray it starts (None: all)


KEYS = {f.name for f in fields(EngineConfig)}


def validate_engine(engine: EngineConfig, where: str = "[engine]") -> None:
    if engine.kind not in ENGINE_KINDS:
        raise InputError(f"{where} kind = {engine.kind!r}", f"use one of {', '.join(ENGINE_KINDS)}")
    for name in ("workers", "test_workers", "test_cpus", "cpus"):
        v = getattr(engine, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InputError(f"{where} {name} = {v!r}", "give a whole number >= 1")
    g = engine.gpus_per_worker
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or g < 0):
        raise InputError(f"{where} gpus_per_worker = {g!r}", "give a number >= 0 (0: draw on CPU; 0.5: two workers per GPU)")
    if engine.kind == "local" and any(getattr(engine, n) != getattr(EngineConfig(), n) for n in
                                      ("address", "workers", "gpus_per_worker", "test_workers", "cpus")):
        raise InputError(f"{where} sets Ray keys but kind = \"local\"", "add kind = \"ray\", or remove those keys")
    engine_module(engine.kind).check_available()


def engine_module(kind: str):
    """The module that runs ``kind`` (imported on demand: Ray is optional)."""
    return importlib.import_module(ENGINES[kind])


def prepare_engine(engine: EngineConfig) -> tuple[EngineConfig, Optional[str]]:
    """Connect the engine and settle what "auto" means there; returns it with the device its draw
    workers use (None: this process's own)."""
    return engine_module(engine.kind).prepare(engine)
