"""What each command does, as one call: validate, lock, run the stages with progress shown.

This layer is the only one that takes locks and shows progress: stages yield events
(:mod:`imgextract.progress`) and write inside folders the caller locked. Every function here
validates everything it can before the first write, so a bad argument costs no work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

from imgextract import rundir
from imgextract.errors import InputError
from imgextract.folders import check_out_folder, claim_out_folder
from imgextract.locks import exclusive
from imgextract.progress import Note, Step, drain, show

RUN_LOCK = ".imgextract.lock"


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_lock(out: Path, what: str = "run folder"):
    """The exclusive lock of a folder imgextract writes (``OUT/.imgextract.lock``)."""
    return exclusive(Path(out) / RUN_LOCK, f"{what} {out}")


# -- indexes ---------------------------------------------------------------------------------------------------

def build_index(source: Path, name: str, embedder: str = "pixel", *, progress: bool = True,
                say: Callable[[str], None] = _err, engine=None, settings=None, **options):
    """Index training images (``index.build``), holding the index's lock; ``progress``: show a bar.
    ``settings``: an ``index.settings.BuildSettings`` (else made of ``embedder`` and ``options``, its fields).
    ``engine``: where the parts are built (an ``engines.EngineConfig``; None: this process)."""
    from imgextract.engines import engine_module
    from imgextract.index.build import begin, finish, prepare
    from imgextract.index.settings import BuildSettings
    from imgextract.index.store import lock_path
    settings = settings if settings is not None else BuildSettings(embedder=embedder, **options)
    job = prepare(source, name, settings)   # every argument checked before a cluster is joined
    if engine is not None and engine.kind != "local":
        from imgextract.engines import prepare_engine
        engine, _ = prepare_engine(engine)
    runner = engine_module(engine.kind if engine is not None else "local")

    def events():
        tmp, resumed, todo = begin(job)
        yield from runner.build_parts(job, tmp, todo, engine)
        return finish(job, tmp, resumed)
    with exclusive(lock_path(job.dest), f"index {job.dest}"):
        return show(events(), say) if progress else drain(events())


def index_build(source: Path, name: str, embedder: str = "pixel", *, thumb_size=(), no_thumbs: bool = False,
                max_memory: str = "4G", workers: int = 0, processes: int = 0, engine: str = "local",
                address: Optional[str] = None, ray_workers: int = 1, **options):
    """``imgextract index build``: the command's options checked (sizes, memory, threads, engine), then
    :func:`build_index`. Returns the result and its rows line (what img2dataset's status column held)."""
    from collections import Counter

    from imgextract.engines import EngineConfig, validate_engine
    from imgextract.index.build import parse_size
    from imgextract.index.choice import parse_memory
    from imgextract.sources.img2dataset import stats_line
    from imgextract.index.settings import BuildSettings
    sizes = [parse_size(t) for t in thumb_size]
    if no_thumbs and sizes:
        raise InputError("--no-thumbs and --thumb-size", "give one of them")
    if workers < 0:
        raise InputError(f"--workers {workers}", "give 0 (one per core) or a positive number of threads")
    if processes < 0:
        raise InputError(f"--processes {processes}", "give 0 (chosen for you) or a positive number of processes")
    settings = BuildSettings(embedder=embedder, max_memory=parse_memory(max_memory),
                             thumb_sizes=None if no_thumbs else tuple(sizes), workers=workers or None,
                             processes=processes or None, **options)
    if engine != "local" and processes:
        raise InputError("--processes is for the local engine", "drop it, or use --ray-workers with --engine ray")
    if engine == "local" and (address is not None or ray_workers != 1):
        raise InputError("--address and --ray-workers need --engine ray", "add --engine ray, or leave them out")
    cluster = None
    if engine != "local":
        cluster = EngineConfig(kind=engine, address=address, workers=ray_workers, test_cpus=max(1, workers or 1))
        validate_engine(cluster, "--engine")
    result = build_index(source, name, engine=cluster, settings=settings)
    rows = f"; rows by status: {stats_line(Counter(result.statuses))} (only success rows are indexed)" \
        if result.statuses else ""
    return result, rows


def index_info(name: str) -> list[str]:
    """What an index holds, one line per aspect (``imgextract index info``)."""
    import json

    from imgextract.index.duplicates import DUPLICATES_JSON
    from imgextract.index.store import open_index
    idx = open_index(name, gpu="off")
    factory = idx.embedder.get("faiss_factory", "Flat")
    params = ", ".join(f"{k}={v}" for k, v in (idx.embedder.get("faiss_params") or {}).items())
    recall = idx.embedder.get("recall_at_10")
    lines = [f"index      {idx.path}", f"images     {len(idx.table)}",
             f"embedder   {idx.embedder['spec']} (dim {idx.embedder['dimension']})",
             f"faiss      {factory}" + (f" ({params})" if params else "")
             + (f", recall@10 {recall:.3f} against exact search at build" if recall is not None else "")
             + (", exact re-rank from vectors.f16" if idx.vectors is not None and factory != "Flat" else ""),
             f"source     {idx.embedder.get('source', '?')} ({idx.embedder.get('source_kind', 'folder')})",
             f"captions   {int(idx.table['caption'].notna().sum())} of {len(idx.table)}"]
    dups = idx.path / DUPLICATES_JSON
    if dups.is_file():
        d = json.loads(dups.read_text())
        groups = ", ".join(f"{c}x: {n}" for c, n in sorted(d["groups_by_copies"].items(), key=lambda kv: -int(kv[0])))
        lines.append(f"duplicates {d['groups']} groups of {d['images']} images (tiled L2 < {d['threshold']}); "
                     f"groups by copies: {groups}")
        families = {int(c): n for c, n in (d.get("families_by_size") or {}).items() if int(c) > 1}
        if families:
            lines.append("families   template families by size: " + ", ".join(
                f"{c} images: {n}" for c, n in sorted(families.items(), reverse=True))
                + " (each shares a substantial detailed region)")
    thumbs = idx.thumb_info()
    lines.append("thumbnails " + (", ".join(f"{k} ({v['rows']} images)" for k, v in sorted(thumbs.items())) or "none"))
    return lines


def convert_sscd(src: Path, out: Path) -> dict:
    """The SSCD release → safetensors (``models.descriptors.convert_sscd``, the one TorchScript reader)."""
    from imgextract.models.descriptors import convert_sscd as convert
    return convert(Path(src), Path(out))


def index_duplicates(name: str, out: Path, threshold: float, similarity: float, k: int,
                     top: Optional[int] = None, captions_out: Optional[Path] = None, rank: str = "copies") -> dict:
    """Near-duplicate groups of an index into ``out``, the top captions into ``captions_out``, and the
    group histogram into the index's duplicates.json (under the index's lock)."""
    from imgextract.index.duplicates import DUPLICATES_JSON, DuplicateParams, find_duplicates, histogram, top_captions
    from imgextract.index.store import lock_path, open_index
    if (top is None) != (captions_out is None):
        raise InputError("--top and --captions-out go together", "give both, e.g. --top 100 --captions-out top.parquet")
    for path, what in ((out, "--out"), (captions_out, "--captions-out")):
        if path is not None and (Path(path).is_dir() or Path(path).suffix.lower() != ".parquet"):
            raise InputError(f"{what} {path}", "name a .parquet file to write")
    if k < 1:
        raise InputError(f"-k {k}", "look at one neighbour or more")
    idx = open_index(name, gpu="off")
    params = DuplicateParams(threshold=threshold, similarity=similarity, k=k)
    table, counts = show(find_duplicates(idx, params))
    captions = top_captions(table, idx, top, rank) if top is not None else None
    rundir.write_parquet_atomic(out, table)
    hist = histogram(table)
    with exclusive(lock_path(idx.path), f"index {idx.path}"):
        rundir.write_json_atomic(idx.path / DUPLICATES_JSON, {
            "threshold": threshold, "similarity": similarity, "k": k, "groups_by_copies": hist,
            "families_by_size": histogram(table, "family", "family_size"),
            "decisions": counts, "images": len(table), "groups": int(table["representative"].sum())})
    if captions is not None:
        rundir.write_parquet_atomic(captions_out, captions)
    return {"table": table, "counts": counts, "histogram": hist, "captions": captions,
            "families": histogram(table, "family", "family_size")}


def index_search(name: str, image: Path, k: int) -> list[dict]:
    """The k nearest training images to one image, each with its exact tiled L2 (the scan's own test)."""
    from imgextract.index.store import open_index
    from imgextract.sources.images import BadImage, open_rgb
    from imgextract.stages.scan import ScanParams, TrainingImages, match_image
    idx = open_index(name)
    try:
        query = open_rgb(image)
    except BadImage as bad:
        raise InputError(f"cannot read image {image} ({bad.reason})", "pass a PNG/JPEG/WebP image") from bad
    params = ScanParams(index=str(idx.path), k=k, relative_n=0, exact_below=2.0)
    sims, ids = idx.search(idx.load_embedder().embed([query]), k)
    return match_image(query, sims[0], ids[0], idx, TrainingImages(idx), params)


# -- sampling --------------------------------------------------------------------------------------------------

def sampling_config(**options):
    """The sampling options as the stages take them (``stages.settings.SamplingConfig``, which checks them);
    an option left None takes SamplingConfig's default."""
    from imgextract.stages.settings import SamplingConfig
    if options.get("size"):
        options["size"] = tuple(options["size"])
    return SamplingConfig(**{k: v for k, v in options.items() if v is not None})


def run_generation(captions: Path, model: str, out: Path, cfg, loaded=None, caption_table=None,
                   triage_file: Optional[Path] = None, top: Optional[int] = None,
                   say: Callable[[str], None] = print, selection: Optional[dict] = None) -> dict:
    """Prepare (validating everything), then sample with progress, holding the run's lock."""
    from imgextract.locks import check_free
    from imgextract.stages.generate import prepare_run, run_shards
    check_out_folder(out)
    check_free(Path(out) / RUN_LOCK, f"run folder {out}")   # before the model loads
    if (triage_file is None) != (top is None):
        raise InputError("--triage and --top go together", "give both (the triage file and how many captions to keep)")
    if triage_file is not None:
        from imgextract.sources.tables import read_captions
        from imgextract.stages.triage import top_captions
        caption_table = top_captions(caption_table if caption_table is not None else read_captions(captions),
                                     triage_file, top)
        selection = {"method": "triage", "file": str(Path(triage_file).resolve()), "top": top}
    loaded, _, caption_table = prepare_run(captions, model, out, cfg, loaded=loaded, captions=caption_table,
                                           write=False, selection=selection)  # every check before the folder is made
    claim_out_folder(out)
    with run_lock(out):
        loaded, record, table = prepare_run(captions, model, out, cfg, command=sys.argv, loaded=loaded,
                                            captions=caption_table, selection=selection)
        show(run_shards(loaded, record, table, out), say)
    return record


def require_family(model: str, what: str, remedy: str | None = None) -> None:
    """Refuse ``what`` for a model whose family the registry does not know, before its weights load, when its
    files tell the family (a folder's model_index.json); hub ids and single files are checked once loaded."""
    from imgextract.models.families import require
    from imgextract.models.pipelines import peek_family
    family = peek_family(model)
    if family is not None:
        require(family, what, model, remedy)


def sample_from_run(run: Path, file: str, out: Path) -> Path:
    """Redraw one of a run's samples as the run drew it (its batch, model, scheduler and threads): the
    PNG written is byte for byte the one the run wrote."""
    import pyarrow.parquet as pq

    from imgextract.stages.generate import batch_of, draw_batches, load_recorded
    run = Path(run)
    if not (run / rundir.RUN_JSON).is_file():
        raise InputError(f"--run {run} is not a run folder (no {rundir.RUN_JSON})", "pass the folder `generate` or `run` wrote")
    if Path(out).is_dir():
        raise InputError(f"--out {out} is a folder", "name the PNG file to write, e.g. --out sample.png")
    record = rundir.read_json(run / rundir.RUN_JSON)
    number, batch = batch_of(record, pq.read_table(run / rundir.CAPTIONS), file)
    drawn = [d for part in draw_batches(load_recorded(record), record, batch, number) for d in part]
    data = next(d.data for d in drawn if d.rel == Path(file).as_posix())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    rundir.write_bytes_atomic(Path(out), data)
    return Path(out)


def sample(model: str, prompt: str, seed: int, out: Path, cfg) -> Path:
    """Redraw one sample from its recorded seed into ``out`` (a PNG file)."""
    from imgextract.models.pipelines import load_pipeline, native_size, quiet_libraries, set_scheduler
    from imgextract.stages.generate import check_size_unloaded, render, resolve_sampling, validate_sampling
    validate_sampling(cfg)
    if Path(out).is_dir():
        raise InputError(f"--out {out} is a folder", "name the PNG file to write, e.g. --out sample.png")
    check_size_unloaded(model, cfg)
    quiet_libraries()
    loaded = load_pipeline(model, cfg.device, cfg.dtype, cfg.model_config)
    cfg = resolve_sampling(cfg, loaded)
    set_scheduler(loaded.pipe, cfg.scheduler, loaded.family)
    size = tuple(cfg.size) if cfg.size else native_size(loaded.pipe, loaded.family)
    image = render(loaded, [prompt], [seed], cfg.steps, cfg.guidance, size)[0]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return Path(out)


def toy_config(images: Optional[Path] = None, **settings):
    """The toy's settings (``demo.toy.ToyConfig``), checked with its images (spec, size, files) before anything
    is written."""
    from imgextract.demo.toy import ToyConfig, training_set
    cfg = ToyConfig(**settings)
    training_set(cfg, images)
    return cfg


def train_toy(out: Path, cfg, images: Optional[Path] = None) -> None:
    """Train (or resume) the toy model into ``out``, holding its lock."""
    from imgextract.demo.toy import check_toy_folder, train
    from imgextract.models.pipelines import quiet_libraries
    check_toy_folder(Path(out))
    quiet_libraries()
    with run_lock(out):
        show(train(out, cfg, images))


# -- testing ---------------------------------------------------------------------------------------------------

def run_scan(generations: Path, index: str, out: Optional[Path], k: int, threshold: float, grid: int,
             embedder: Optional[str] = None, device: str = "auto", say: Callable[[str], None] = print,
             **relative) -> Path:
    """Scan with progress, holding the output folder's lock; says what it resumed, added or dropped."""
    from imgextract.index.store import check_embedder, open_index
    from imgextract.models.descriptors import resolved_spec
    from imgextract.stages.scan import ScanParams, default_out, described, scan
    if relative.get("descriptor"):
        relative["descriptor"] = resolved_spec(relative["descriptor"])
    params = ScanParams(index=index, k=k, threshold=threshold, grid=grid, **relative)   # checks itself
    out = Path(out) if out else default_out(generations)
    check_out_folder(out)
    idx = open_index(index)
    if embedder:
        check_embedder(idx, embedder)
    describe = described(idx, params, device)   # refused here, before any work, when the index lacks it
    claim_out_folder(out)
    with run_lock(out):
        show(scan(generations, params, out, device=device, index=idx, describe=describe), say)
    return out


def scan_summary(out: Path) -> dict:
    """A scan's summary.json (what ``scan`` prints)."""
    return rundir.read_json(Path(out) / rundir.SUMMARY)


def write_report(run: Path, title: str) -> Path:
    """report.html of a run or scan folder."""
    from imgextract.report.report import render_report
    return render_report(run, title)


def paper_figures(run: Path) -> tuple[str, Path]:
    """The papers' table of a scanned run, as text, and the paper.json written."""
    from imgextract.report.paper import paper_text, write_paper
    block, path = write_paper(run)
    return paper_text(block), path


def run_cliques(run: Path, params=None, **settings):
    """cliques.parquet of a run (the clique test of every caption), holding the run's lock. ``params``: a
    ``stages.cliques.CliqueParams``, or its fields as keywords."""
    from imgextract.stages.cliques import CliqueParams
    from imgextract.stages.cliques import run_cliques as cliques_of
    from imgextract.stages.cliques import validate_params
    params = params if params is not None else CliqueParams(**settings)
    validate_params(params)
    if not rundir.is_run_dir(run):
        return cliques_of(run, params)  # refuses it, naming the folder
    with run_lock(run):
        return cliques_of(run, params)


def run_watermarks(images: Path, out: Optional[Path], detector=None, *, brands: Optional[Path] = None,
                   templates: Optional[Path] = None, classifier: Optional[Path] = None, device: str = "cpu"):
    """watermarks.parquet for a run, an index or a folder; a scanned run's summary gains the rates.
    ``detector``: a ``stages.watermarks.Detector``, else one made of the brand list, templates and classifier."""
    from imgextract.stages.watermarks import (Detector, WatermarkClassifier, list_targets, load_brands, load_templates,
                                              watermark_summary)
    from imgextract.stages.watermarks import run_watermarks as marks_of
    if detector is None:
        detector = Detector(brands=load_brands(brands), templates=load_templates(templates),
                            classifier=WatermarkClassifier(classifier, device) if classifier else None)
    _, default = list_targets(images)
    out = Path(out) if out else default
    claim_out_folder(out)
    with run_lock(out, "output folder"):
        table = show(marks_of(images, out, detector))
        if (out / rundir.SUMMARY).is_file():  # a scanned run: fold the rates into its summary
            summary = rundir.read_json(out / rundir.SUMMARY)
            marks = watermark_summary(out, Path(summary["parameters"]["index_path"]))
            if marks:
                summary["watermarks"] = marks
                rundir.write_json_atomic(out / rundir.SUMMARY, summary)
    return table, out


def triage_params(steps: int, samples: int, schedule_steps: int, guidance: float, seed: int,
                  run: Optional[Path] = None, say: Callable[[str], None] = _err):
    """Triage's settings (``stages.triage.TriageParams``), from a run's run.json when given (said)."""
    from imgextract.stages.triage import TriageParams, params_of_run
    params = TriageParams(steps=steps, samples=samples, schedule_steps=schedule_steps, guidance=guidance, seed=seed)
    if run is None:
        return params
    params = params_of_run(run, params)
    say(f"note: measuring the model as {run} sampled it: guidance {params.guidance}, {params.schedule_steps} steps, "
        f"{params.scheduler}")
    return params


def triage_methods(methods: Optional[str]) -> tuple[str, ...]:
    """A comma list of methods; none given: the evaluated default score's."""
    from imgextract.stages.triage import DEFAULT_METHOD
    return tuple(m.strip() for m in (methods or DEFAULT_METHOD).split(",") if m.strip())


def score_column(method: str) -> str:
    """The column a triage method writes (wen → wen_score)."""
    from imgextract.stages.triage import SCORE_OF
    return SCORE_OF[method]


def ranking_reason(key: str) -> str:
    """Why a triage ranked by ``key``: the default score's evidence, or that it is not the default."""
    from imgextract.stages.triage import DEFAULT_EVIDENCE, DEFAULT_METHOD, SCORE_OF
    default = SCORE_OF[DEFAULT_METHOD]
    return DEFAULT_EVIDENCE if key == default else f"not the default ({default}: {DEFAULT_EVIDENCE})"


def run_triage(captions: Path, model: str, out: Path, params, methods: tuple[str, ...], device: str = "auto",
               dtype: str = "auto", model_config: Optional[str] = None):
    """Rank captions by how likely they are memorized; the ranking is written to ``out``."""
    from imgextract.models.pipelines import load_pipeline, quiet_libraries, set_scheduler
    from imgextract.sources.tables import read_captions
    from imgextract.models.families import require
    from imgextract.stages.triage import METHODS, triage, write_triage
    if not methods or set(methods) - set(METHODS):
        raise InputError(f"--methods '{','.join(methods)}'", f"use a comma list of {', '.join(METHODS)}")
    table = read_captions(captions).to_pandas()
    noise = [m for m in methods if m != "edge"]   # the noise-difference scores read the denoiser itself
    if noise:
        require_family(model, f"triage --methods {','.join(noise)}", "use --methods edge for this model")
    quiet_libraries()
    loaded = load_pipeline(model, device, dtype, model_config)
    if noise:
        require(loaded.family, f"triage --methods {','.join(noise)}", model, "use --methods edge for this model")
    set_scheduler(loaded.pipe, params.scheduler, loaded.family)
    result = triage(loaded, table, params, methods)
    write_triage(result, out, params)
    return result


# -- the sweep -------------------------------------------------------------------------------------------------

def run_sweep(captions: Path, model: str, out: Path, cfg, settings, engine=None, loaded=None, caption_table=None,
              selection: Optional[dict] = None, say: Callable[[str], None] = print) -> dict:
    """Draw and test every unfinished shard on the configured engine, holding the run's lock.

    Returns this call's totals: samples, kept, memorized, and unet_s (seconds inside the UNet, when
    ``IMGEXTRACT_PROFILE_UNET=1``).
    """
    from imgextract.engines import EngineConfig, engine_module, prepare_engine
    from imgextract.stages.generate import prepare_run
    from imgextract.stages.tester import storage_record
    engine = engine or EngineConfig()
    check_out_folder(out)
    engine, device = prepare_engine(engine)
    args = dict(loaded=loaded, captions=caption_table, selection=selection, storage=storage_record(settings),
                worker_device=device)
    loaded, _, caption_table = prepare_run(captions, model, out, cfg, write=False, **args)
    args.update(loaded=loaded, captions=caption_table)
    claim_out_folder(out)
    with run_lock(out):
        loaded, record, table = prepare_run(captions, model, out, cfg, command=sys.argv, **args)
        if device is not None:
            loaded = None  # the engine's workers load their own
        runner = engine_module(engine.kind)
        return show(_sweep(runner, out, record, table, settings, engine, loaded), say)


def _sweep(runner, out: Path, record: dict, table, settings, engine, loaded):
    from imgextract.stages.generate import manifest_path, shard_items
    shards = shard_items(record, table)
    todo = [n for n in range(len(shards)) if not manifest_path(out, n).is_file()]
    total = sum(map(len, shards))
    done = total - sum(len(shards[n]) for n in todo)
    if len(todo) < len(shards):
        yield Note(f"resuming: {len(shards) - len(todo)} shard(s) already done")
    described = runner.describe(engine)
    if described:
        yield Note(described)
    yield Step("sweep", done, total, "img")
    totals = {"samples": 0, "kept": 0, "memorized": 0, "unet_s": 0.0}
    for counts in runner.sweep(out, todo, settings, engine, loaded):
        done += counts["samples"]
        for k in totals:
            totals[k] += counts.get(k, 0)
        yield Step("sweep", done, total, "img", f"{totals['memorized']} memorized, {totals['kept']} kept")
    return totals
