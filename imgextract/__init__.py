"""imgextract: audit text-to-image diffusion models for memorized training images.

The public API, imported on first use (so ``import imgextract`` stays cheap)::

    from imgextract import build_index, open_index, Guard, run_config, scan
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

API = {
    "build_index": "imgextract.app.commands",
    "run_generation": "imgextract.app.commands",
    "run_scan": "imgextract.app.commands",
    "run_sweep": "imgextract.app.commands",
    "run_config": "imgextract.app.audit",
    "run_demo": "imgextract.app.demo",
    "run_check": "imgextract.app.artist",
    "compare_runs": "imgextract.app.compare",
    "Guard": "imgextract.app.guard",
    "guard_file": "imgextract.app.guard",
    "open_index": "imgextract.index.store",
    "render_report": "imgextract.report.report",
    "load_pipeline": "imgextract.models.pipelines",
    "load_embedder": "imgextract.models.embedders",
}
__all__ = sorted(API)


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'imgextract' has no attribute {name!r}")
