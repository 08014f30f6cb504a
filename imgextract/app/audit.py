"""The whole audit from one TOML file: index → sweep (generate + test per shard) → report.

Every path in the file is relative to the file's folder. Everything is validated (captions,
model, index source, engine) before the first sample is drawn; each stage resumes on a re-run.

    out = "runs/audit"    keep = "auto"    (all | evidence | auto: all below 100k samples)
    [index]     source = "train/"   name = "train"   embedder = "pixel"
    [generate]  captions = "captions.txt"   model = "path/or/hub-id"   samples = 16  steps = 50 ...
    [scan]      k = 10   threshold = 0.15   grid = 4
    [cliques]   delta = 0.15   min_size = 10        (optional: the clique test of every caption)
    [watermarks] brands = "brands.txt"  templates = "logos/"   (optional: OCR every sample; both keys optional)
    [engine]    kind = "local" | "ray"   address = "auto"   workers = 8   gpus_per_worker = 1
    [report]    title = "..."
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

from imgextract.app.settings import CliqueParams, SamplingConfig, ScanParams
from imgextract.errors import InputError

# a section's keys are its settings object's fields (the defaults are theirs), plus what names the work
SCAN_KEYS = {f.name for f in fields(ScanParams)} - {"index"}
CLIQUE_KEYS = {f.name for f in fields(CliqueParams)} - {"grid"}     # the scan's grid
WATERMARK_KEYS = {"brands", "templates"}
TOP_KEYS = {"out", "keep", "index", "generate", "scan", "cliques", "watermarks", "report", "engine"}
GENERATE_KEYS = {f.name for f in fields(SamplingConfig)} | {"captions", "model", "triage", "top"}


# every key's type, and for counts the least value: checked before anything is built or loaded
WHOLE, NUMBER, TEXT, SIZE = "a whole number", "a number", "a string", "[height, width]"
TYPES = {
    None: {"out": TEXT, "keep": TEXT},
    "index": {"source": TEXT, "name": TEXT, "embedder": TEXT},
    "generate": {"captions": TEXT, "model": TEXT, "samples": (WHOLE, 1), "batch_size": (WHOLE, 1),
                 "steps": (WHOLE, 1), "guidance": (NUMBER, 0), "scheduler": TEXT, "size": SIZE, "seed": (WHOLE, 0),
                 "device": TEXT, "dtype": TEXT, "shard_size": (WHOLE, 1), "model_config": TEXT, "triage": TEXT,
                 "top": (WHOLE, 1)},
    "scan": {"k": (WHOLE, 1), "threshold": (NUMBER, 0), "grid": (WHOLE, 1), "relative_n": (WHOLE, 0),
             "alpha": (NUMBER, 0), "relative_threshold": (NUMBER, 0), "criterion": TEXT, "exact_below": (NUMBER, 0),
             "min_share": (NUMBER, 0), "descriptor": TEXT},
    "cliques": {"delta": (NUMBER, 0), "min_size": (WHOLE, 1), "max_cliques": (WHOLE, 1)},
    "watermarks": {"brands": TEXT, "templates": TEXT},
    "report": {"title": TEXT},
}


def _check_types(cfg: dict, path: Path) -> None:
    for section, keys in TYPES.items():
        values = cfg if section is None else cfg.get(section, {})
        where = f"config file {path}: " + ("" if section is None else f"[{section}] ")
        if section is not None and not isinstance(values, dict):
            raise InputError(f"{where.rstrip()} is not a section", f"write it as [{section}] with keys under it")
        for key, kind in keys.items():
            if key not in values:
                continue
            v = values[key]
            want, least = kind if isinstance(kind, tuple) else (kind, None)
            ok = {WHOLE: isinstance(v, int) and not isinstance(v, bool) and v < 2 ** 63,
                  NUMBER: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"),
                  TEXT: isinstance(v, str),
                  SIZE: isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                    and 8 <= x <= 8192 for x in v)}[want]
            if not ok or (least is not None and v < least):
                bound = f" >= {least}" if least is not None else ""
                raise InputError(f"{where}{key} = {v!r}", f"give {want}{bound}" + (", e.g. size = [512, 512]"
                                                                                 if want == SIZE else ""))


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def load_config(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist", "pass a TOML file (see docs/audit.md, the run's config file)")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {path} is not valid TOML ({exc})", "fix the syntax at that line") from exc
    for section in ("index", "generate"):
        if section not in cfg:
            raise InputError(f"config file {path} has no [{section}] section", f"add [{section}] (see docs/audit.md)")
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise InputError(f"config file {path}: unknown keys or sections {sorted(unknown)}", f"use only {sorted(TOP_KEYS)}")
    for section, keys in (("generate", GENERATE_KEYS), ("scan", SCAN_KEYS), ("cliques", CLIQUE_KEYS),
                          ("watermarks", WATERMARK_KEYS), ("index", set(TYPES["index"])), ("report", {"title"})):
        if not isinstance(cfg.get(section, {}), dict):
            raise InputError(f"config file {path}: {section} is not a section", f"write it as [{section}]")
        unknown = set(cfg.get(section, {})) - keys
        if unknown:
            raise InputError(f"config file {path}: unknown [{section}] keys {sorted(unknown)}",
                             f"use only {sorted(keys)}")
    _check_types(cfg, path)
    for key in ("captions", "model"):
        if key not in cfg["generate"]:
            raise InputError(f"config file {path}: [generate] lacks '{key}'", f"add {key} = \"...\"")
    if "source" not in cfg["index"] and "name" not in cfg["index"]:
        raise InputError(f"config file {path}: [index] needs 'source' (to build) or 'name' (to reuse)",
                         "add source = \"train/\" and name = \"NAME\"")
    return cfg


def engine_config(cfg: dict, path: Path):
    from imgextract.engines import KEYS, EngineConfig, validate_engine
    section = cfg.get("engine", {})
    unknown = set(section) - KEYS
    if unknown:
        raise InputError(f"config file {path}: unknown [engine] keys {sorted(unknown)}", f"use only {sorted(KEYS)}")
    engine = EngineConfig(**section)
    validate_engine(engine, f"config file {path}: [engine]")
    return engine


def run_config(path: Path, keep: str | None = None, say=print, descriptor: str | None = None) -> Path:
    """index → sweep (generate and test each shard where it was drawn) → assemble → report.

    ``keep`` (all | evidence | auto) overrides the file's ``keep``; ``descriptor`` its ``[scan] descriptor``
    (an index built here from ``[index] source`` stores that descriptor too).
    """
    from imgextract.stages.tester import check_keep
    path = Path(path)
    cfg = load_config(path)  # the file, the engine and the keep mode first: a typo costs no model load
    engine = engine_config(cfg, path)
    keep = check_keep(keep or cfg.get("keep", "auto"))

    from imgextract.app.commands import build_index, run_scan, run_sweep
    from imgextract.folders import check_out_folder
    from imgextract.engines import prepare_engine
    from imgextract.index.store import open_index, resolve_index
    from imgextract.report.report import render_report
    from imgextract.sources.tables import read_captions
    from imgextract.stages.cliques import check_can_flag
    from imgextract.stages.generate import prepare_run
    from imgextract.stages.tester import (SweepSettings, align_shard_size, assemble_cliques, assemble_watermarks,
                                          resolve_keep, storage_record)
    base = path.resolve().parent
    out = _path(base, cfg.get("out", "runs/audit"))
    check_out_folder(out, f"config file {path}: out")   # before the index is built or a model loaded
    ix = cfg["index"]
    name = ix.get("name") or Path(ix["source"]).name
    index_path = resolve_index(name) if "/" not in name else _path(base, name)
    g = dict(cfg["generate"])
    captions = _path(base, g.pop("captions"))
    model = g.pop("model")
    if Path(model).expanduser().exists() or model.startswith("."):
        model = str(_path(base, model))
    if "size" in g:
        g["size"] = tuple(g["size"])
    triage_file = _path(base, g.pop("triage")) if "triage" in g else None
    top = g.pop("top", None)
    sampling = SamplingConfig(**g)
    table = read_captions(captions)
    if triage_file is not None:
        from imgextract.stages.triage import top_captions
        table = top_captions(table, triage_file, top if top is not None else 0)
    s = cfg.get("scan", {})
    relative = {k: s[k] for k in ("relative_n", "alpha", "relative_threshold", "criterion", "exact_below", "min_share")
                if k in s}
    from imgextract.models.descriptors import resolved_spec
    if descriptor or "descriptor" in s:   # a file named in the config is found beside it
        kind, _, arg = (descriptor or s["descriptor"]).partition(":")
        relative["descriptor"] = resolved_spec(f"{kind}:{_path(base, arg) if not descriptor else arg}")
    params = ScanParams(index=str(Path(index_path).resolve()),   # the file's [scan] keys over ScanParams' defaults
                        **{k: s[k] for k in ("k", "threshold", "grid") if k in s}, **relative)
    cliques = CliqueParams(grid=params.grid, **cfg["cliques"]) if "cliques" in cfg else None   # checks itself
    if cliques:
        check_can_flag(sampling.samples, cliques.min_size, f"config file {path}: [cliques] min_size = "
                       f"{cliques.min_size} but [generate] samples = {sampling.samples}", "min_size")
    keep = resolve_keep(keep, table.num_rows * sampling.samples)
    aligned = align_shard_size(sampling.shard_size, sampling.samples)
    if aligned != sampling.shard_size and "shard_size" in g:
        say(f"shard_size {sampling.shard_size} -> {aligned}: a sweep's shards hold whole captions")
    sampling.shard_size = aligned
    # validate captions, model and run folder before any index or sampling work
    selection = {"method": "triage", "file": str(triage_file), "top": top} if triage_file is not None else None
    marks = None
    if "watermarks" in cfg:  # OCR every sample where it is drawn; files checked now, before any work
        from imgextract.stages.watermarks import load_brands, load_templates
        w = cfg["watermarks"]
        marks = tuple(str(_path(base, w[k]).resolve()) if k in w else None for k in ("brands", "templates"))
        load_brands(Path(marks[0]) if marks[0] else None)
        load_templates(Path(marks[1]) if marks[1] else None)
    settings = SweepSettings(params, cliques, keep, watermarks=marks)
    if "source" not in ix or (index_path / "index.faiss").is_file():
        # an index named but missing, or one without the descriptor asked for, is refused now, not in a test worker
        from imgextract.stages.scan import described
        described(open_index(str(index_path)), params)
    engine, device = prepare_engine(engine)
    loaded, _, _ = prepare_run(captions, model, out, sampling, captions=table, write=False, selection=selection,
                               storage=storage_record(settings), worker_device=device)
    if "source" in ix and not (index_path / "index.faiss").is_file():
        build_index(_path(base, ix["source"]), str(index_path), ix.get("embedder", "pixel"), say=say, engine=engine,
                    descriptor=params.descriptor)
    run_sweep(captions, model, out, sampling, settings, engine, loaded=loaded, caption_table=table,
              selection=selection, say=say)
    assemble_watermarks(out)  # before the scan's assembly, which folds each sample's mark into matches
    run_scan(out, str(index_path), out, params.k, params.threshold, params.grid, ix.get("embedder"), say=say,
             **relative)  # every shard was scanned where it was drawn: this assembles matches and summary
    assemble_cliques(out)
    return render_report(out, cfg.get("report", {}).get("title", "imgextract report"))


def run_verdict(report: Path) -> str:
    """The verdict line of the run whose report.html this is."""
    from imgextract import rundir
    return verdict(rundir.read_json(Path(report).parent / rundir.SUMMARY))


def verdict(summary: dict) -> str:
    """One line: how many training images were found memorized, per duplication level if known."""
    n = len(summary["memorized_images"])
    dup = summary.get("duplication") or []
    if dup:
        total = sum(r["images"] for r in dup)
        levels = ", ".join(f"{r['copies']}x: {r['memorized_images']}/{r['images']}" for r in dup)
        fam = summary.get("template_families")
        if fam:
            total += fam["members"]
            levels += (f"; template families: {fam['members_copied']} of {fam['members']} members copied as a "
                       "template")
        return f"verdict: {n} of {total} training images memorized ({levels})"
    return f"verdict: {n} training images memorized in {summary['generations_scanned']} generations"
