"""The run directory: one folder per audit, written so that a crash loses at most one shard.

Layout (see ARCHITECTURE.md)::

    RUN/
      run.json                 config, model fingerprint, versions, seed policy, safety checker
      captions.parquet         caption_id, caption, train_path, copies
      samples/shard-00000/     PNG samples of shard 0
      samples/shard-00000.parquet   its manifest; the shard is done iff this file exists
      scan/shard-00000.parquet per-shard matches (scan resumes the same way)
      matches.parquet          all matches, summary.json, report.html

Every file that marks progress is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import platform
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imgextract.errors import InputError

RUN_JSON = "run.json"
CAPTIONS = "captions.parquet"
SAMPLES = "samples"
SCAN = "scan"
MATCHES = "matches.parquet"
SUMMARY = "summary.json"
REPORT = "report.html"
VERSIONED_PACKAGES = ("imgextract", "torch", "diffusers", "transformers", "open_clip_torch", "faiss-cpu",
                      "faiss-gpu", "numpy", "pillow", "imagehash", "pyarrow")


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file written under a temporary name, flushed to disk, then renamed into place: a reader
    (or a resumed run) sees the old file or the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def write_parquet_atomic(path: Path, table: pa.Table | pd.DataFrame) -> None:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_file(path) as f:
        pq.write_table(table, f)


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as f:
        np.save(f, array)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


def is_run_dir(path: Path) -> bool:
    return (Path(path) / RUN_JSON).is_file()


def is_imgextract_run(path: Path) -> bool:
    """``run.json`` is a JSON object that imgextract wrote (its ``imgextract_run`` key), not a look-alike."""
    try:
        record = read_json(Path(path) / RUN_JSON)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "imgextract_run" in record


def remove_run(path: Path) -> None:
    """Delete a run folder, only when it provably is one (a real folder with imgextract's run.json)."""
    import shutil
    path = Path(path)
    if path.is_symlink() or not path.is_dir() or not is_imgextract_run(path):
        raise InputError(f"{path} is not an imgextract run folder; refusing to delete it",
                         "choose another output folder")
    shutil.rmtree(path)


def planned_shards(run: Path) -> int | None:
    """How many sample shards the run will have when generation is finished."""
    run = Path(run)
    try:
        sampling = read_json(run / RUN_JSON)["sampling"]
        if "samples" in pq.read_schema(run / CAPTIONS).names:   # counts of their own (generate.SAMPLES_COLUMN)
            n = sum(map(int, pq.read_table(run / CAPTIONS, columns=["samples"])["samples"].to_pylist()))
        else:
            n = pq.read_metadata(run / CAPTIONS).num_rows * int(sampling["samples"])
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return -(-n // int(sampling["shard_size"]))


def read_samples(run: Path) -> pd.DataFrame:
    """All finished shards' manifests, with absolute file paths."""
    run = Path(run)
    manifests = sorted((run / SAMPLES).glob("shard-*.parquet"))
    if not manifests:
        return pd.DataFrame()
    df = pd.concat([pq.read_table(m).to_pandas() for m in manifests], ignore_index=True)
    df["generation_path"] = [str((run / f).resolve()) for f in df["file"]]
    return df
