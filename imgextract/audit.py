"""The whole audit from one TOML file: index → generate → scan → report.

Every path in the file is relative to the file's folder. Everything is validated (captions,
model, index source) before the first sample is drawn; each stage resumes on a re-run.

    out = "runs/audit"
    [index]     source = "train/"   name = "train"   embedder = "pixel"
    [generate]  captions = "captions.txt"   model = "path/or/hub-id"   samples = 16  steps = 50 ...
    [scan]      k = 10   threshold = 0.15   grid = 4
    [report]    title = "..."
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from imgextract.errors import InputError

GENERATE_KEYS = {"captions", "model", "samples", "batch_size", "steps", "guidance", "scheduler", "size", "seed",
                 "device", "dtype", "shard_size", "model_config"}


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def load_config(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist", "pass a TOML file (see README, 'imgextract run')")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {path} is not valid TOML ({exc})", "fix the syntax at that line") from exc
    for section in ("index", "generate"):
        if section not in cfg:
            raise InputError(f"config file {path} has no [{section}] section", f"add [{section}] (see README)")
    unknown = set(cfg["generate"]) - GENERATE_KEYS
    if unknown:
        raise InputError(f"config file {path}: unknown [generate] keys {sorted(unknown)}",
                         f"use only {sorted(GENERATE_KEYS)}")
    for key in ("captions", "model"):
        if key not in cfg["generate"]:
            raise InputError(f"config file {path}: [generate] lacks '{key}'", f"add {key} = \"...\"")
    if "source" not in cfg["index"] and "name" not in cfg["index"]:
        raise InputError(f"config file {path}: [index] needs 'source' (to build) or 'name' (to reuse)",
                         "add source = \"train/\" and name = \"NAME\"")
    return cfg


def run_config(path: Path) -> Path:
    from imgextract.cli import run_generation, run_scan
    from imgextract.generate import SamplingConfig, prepare_run
    from imgextract.index import build_index, resolve_index
    from imgextract.report import render_report

    path = Path(path)
    cfg = load_config(path)
    base = path.resolve().parent
    out = _path(base, cfg.get("out", "runs/audit"))
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
    sampling = SamplingConfig(**g)
    # validate captions, model and run folder before any index or sampling work
    loaded, _, _ = prepare_run(captions, model, out, sampling)
    if "source" in ix and not (index_path / "index.faiss").is_file():
        build_index(_path(base, ix["source"]), str(index_path), ix.get("embedder", "pixel"))
    run_generation(captions, model, out, sampling, loaded=loaded)
    s = cfg.get("scan", {})
    run_scan(out, str(index_path), out, s.get("k", 10), s.get("threshold", 0.15), s.get("grid", 4),
             ix.get("embedder"))
    return render_report(out, cfg.get("report", {}).get("title", "imgextract report"))
