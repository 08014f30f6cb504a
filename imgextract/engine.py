"""The local engine: runs the stage functions in order, with locks, progress and resume.

Orchestration lives here, not in ``cli.py``, so the command line, ``run`` configs, the
demo and ``check`` all drive the same stages the same way: the run folder is locked
while it is written (one writer per run), every stage validates before it works, and
progress is a bar on a terminal and a plain line every few percent elsewhere (CI logs,
``| tee``), where carriage-return bars would pile into one line.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from imgextract.errors import InputError
from imgextract.locks import exclusive
from imgextract.pipelines import quiet_libraries  # noqa: F401  (re-exported for the CLI)

RUN_LOCK = ".imgextract.lock"


class Progress:
    """tqdm on a TTY; otherwise one plain line per ~5% or 30 s: stage, done/total, rate, ETA."""

    def __init__(self, total: float, desc: str, unit: str, initial: float = 0, **tqdm_args):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.tty = sys.stderr.isatty()
        self._t0 = self._last_t = time.monotonic()
        self._start_n = self._last_n = initial
        self._bar = None
        if self.tty:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, **tqdm_args)

    def set_postfix_str(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def update_to(self, n: float) -> None:
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            self.n = n
            return
        self.n = n
        now = time.monotonic()
        step = max(self.total * 0.05, 1e-9)
        if n >= self.total or n - self._last_n >= step or now - self._last_t >= 30:
            self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self._start_n) / max(now - self._t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        eta_text = f"{eta:.0f} s left" if eta == eta else "ETA unknown"
        print(f"{self.desc}: {self.n:.0f}/{self.total:.0f} {self.unit} ({100 * self.n / max(self.total, 1e-9):.0f}%), "
              f"{rate:.2f} {self.unit}/s, {eta_text}", file=sys.stderr, flush=True)
        self._last_n, self._last_t = self.n, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._last_n:
            self._line(time.monotonic())


def run_lock(out: Path, what: str = "run folder"):
    """The exclusive lock of a folder imgextract writes (``OUT/.imgextract.lock``)."""
    return exclusive(Path(out) / RUN_LOCK, f"{what} {out}")


def check_out_folder(out: Path, what: str = "--out") -> None:
    if Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"{what} {out} is a file", "name a folder (it is created if missing)")


def run_generation(captions: Path, model: str, out: Path, cfg, loaded=None, caption_table=None,
                   triage_file: Optional[Path] = None, top: Optional[int] = None,
                   say: Callable[[str], None] = print, selection: Optional[dict] = None) -> dict:
    """Prepare (validating everything), then sample with progress, holding the run's lock."""
    from imgextract.generate import prepare_run, run_shards
    check_out_folder(out)
    if (triage_file is None) != (top is None):
        raise InputError("--triage and --top go together", "give both (the triage file and how many captions to keep)")
    if triage_file is not None:
        from imgextract.sources import read_captions
        from imgextract.triage import top_captions
        caption_table = top_captions(caption_table if caption_table is not None else read_captions(captions),
                                     triage_file, top)
        selection = {"method": "triage", "file": str(Path(triage_file).resolve()), "top": top}
    loaded, _, caption_table = prepare_run(captions, model, out, cfg, loaded=loaded, captions=caption_table,
                                           write=False, selection=selection)  # every check before the folder is made
    with run_lock(out):
        loaded, record, table = prepare_run(captions, model, out, cfg, command=sys.argv, loaded=loaded,
                                            captions=caption_table, selection=selection)
        bar = None
        for p in run_shards(loaded, record, table, out):
            if bar is None:
                bar = Progress(p.total, "generate", "img", initial=p.done)
                if p.skipped_shards:
                    say(f"resuming: {p.skipped_shards} shard(s) already done")
            else:
                bar.update_to(p.done)
        bar.close()
    return record


def run_scan(generations: Path, index: str, out: Optional[Path], k: int, threshold: float, grid: int,
             embedder: Optional[str] = None, device: str = "auto", say: Callable[[str], None] = print,
             **relative) -> Path:
    """Scan with progress, holding the output folder's lock; says what it resumed, added or dropped."""
    from imgextract.index import check_embedder, open_index
    from imgextract.scan import ScanParams, default_out, scan, validate_params
    params = ScanParams(index=index, k=k, threshold=threshold, grid=grid, **relative)
    validate_params(params)
    out = Path(out) if out else default_out(generations)
    check_out_folder(out)
    idx = open_index(index)
    if embedder:
        check_embedder(idx, embedder)
    with run_lock(out):
        bar = None
        for step in scan(generations, params, out, device=device, index=idx):
            if isinstance(step, str):
                say(step)
                continue
            done, total = step
            bar = bar or Progress(total, "scan", "shard")
            bar.update_to(done)
        if bar:
            bar.close()
    return out


def train_with_progress(out: Path, cfg, images: Optional[Path] = None) -> None:
    from imgextract.toy import check_toy_folder, train
    quiet_libraries()
    bar = None
    check_toy_folder(Path(out))
    with run_lock(out):
        for p in train(out, cfg, images):
            if bar is None:
                bar = Progress(round(p.total), "train", p.unit, mininterval=1.0,
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} "
                                          "[{remaining} left{postfix}]")
            bar.set_postfix_str(f"{p.phase} step {p.step} loss {p.loss:.4f}")
            bar.update_to(min(p.done, bar.total))
    if bar:
        bar.close()


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


ENGINE_KINDS = ("local", "ray")


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


def prepare_engine(engine: EngineConfig) -> tuple[EngineConfig, Optional[str]]:
    """Connect a Ray engine and settle its GPUs; returns it with the device its draw workers use
    (None for the local engine: this process's own)."""
    if engine.kind != "ray":
        return engine, None
    from imgextract import ray_engine
    engine = ray_engine.prepare(engine)
    return engine, ray_engine.worker_device(engine)


def run_sweep(captions: Path, model: str, out: Path, cfg, settings, engine: EngineConfig = EngineConfig(),
              loaded=None, caption_table=None, selection: Optional[dict] = None,
              say: Callable[[str], None] = print) -> dict:
    """Draw and test every unfinished shard (``sweep.py``), on this process or on Ray, holding the run's lock.

    Returns this call's totals: samples, kept, memorized, and unet_s (seconds inside the UNet, when
    ``IMGEXTRACT_PROFILE_UNET=1``).

    Both engines draw with ``generate.draw_batches`` and finish with ``sweep.ShardTester.finish``.
    Locally the next shard is drawn while the previous one is tested and written (one thread), so
    PNG encoding, hashing and the tests overlap the UNet.
    """
    from imgextract.generate import manifest_path, prepare_run, shard_items
    from imgextract.sweep import storage_record
    check_out_folder(out)
    engine, device = prepare_engine(engine)
    storage = storage_record(settings)
    args = dict(loaded=loaded, captions=caption_table, selection=selection, storage=storage, worker_device=device)
    loaded, _, caption_table = prepare_run(captions, model, out, cfg, write=False, **args)
    args.update(loaded=loaded, captions=caption_table)
    with run_lock(out):
        loaded, record, table = prepare_run(captions, model, out, cfg, command=sys.argv, **args)
        shards = shard_items(record, table)
        todo = [n for n in range(len(shards)) if not manifest_path(out, n).is_file()]
        total = sum(map(len, shards))
        done = total - sum(len(shards[n]) for n in todo)
        if len(todo) < len(shards):
            say(f"resuming: {len(shards) - len(todo)} shard(s) already done")
        bar = Progress(total, "sweep", "img", initial=done)
        totals = {"samples": 0, "kept": 0, "memorized": 0, "unet_s": 0.0}
        if engine.kind == "ray":
            from imgextract import ray_engine
            say(f"ray: {engine.workers} draw worker(s) x {engine.gpus_per_worker} GPU, "
                f"{engine.test_workers or engine.workers} test worker(s) x {engine.test_cpus} CPU")
            del loaded  # the workers load their own
            finished = ray_engine.sweep(out, todo, settings, engine)
        else:
            finished = _sweep_local(loaded, record, shards, todo, out, settings)
        for counts in finished:
            done += counts["samples"]
            for k in totals:
                totals[k] += counts.get(k, 0)
            bar.set_postfix_str(f"{totals['memorized']} memorized, {totals['kept']} kept")
            bar.update_to(done)
        bar.close()
    return totals


def _sweep_local(loaded, record: dict, shards: list, todo: list[int], out: Path, settings):
    from concurrent.futures import ThreadPoolExecutor
    from imgextract.generate import UnetClock, draw_batches
    from imgextract.sweep import ShardTester
    tester = ShardTester(out, settings)
    clock = UnetClock.install(loaded)
    with ThreadPoolExecutor(max_workers=1) as finisher:
        pending = None
        for number in todo:
            before = clock.seconds if clock else 0.0
            drawn = [d for batch in draw_batches(loaded, record, shards[number], number) for d in batch]
            unet = (clock.seconds - before) if clock else 0.0
            if pending is not None:
                yield pending.result()
            pending = finisher.submit(lambda n, d, u: {**tester.finish(n, d), "unet_s": u}, number, drawn, unet)
        if pending is not None:
            yield pending.result()
