"""Locators: the strings an index stores to name a training image's bytes, and how to read them.

A plain path for a file; ``SHARD.tar::OFFSET+SIZE`` for a tar member (found by one walk of the
tar headers, ``TarInfo.offset_data``, then one seek per read); ``SHARD.parquet::COLUMN@ROW`` for
a parquet cell; an http(s) URL, fetched on demand (:mod:`imgextract.sources.fetch`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from imgextract.sources import fetch


SEP = "::"
MAX_MEMBER = 512 * 1024 * 1024   # no image in a shard is larger: a bigger claim is a forged header


def is_locator(path) -> bool:
    return SEP in str(path) or fetch.is_url(path)


_parquet_cache: OrderedDict = OrderedDict()

_parquet_lock = threading.Lock()


def read_bytes(locator) -> bytes:
    """The bytes a locator names: a tar member by offset (one seek), a parquet cell, or a file."""
    text = str(locator)
    if fetch.is_url(text):
        return fetch.get(text)
    if SEP not in text or Path(text).is_file():   # a real file named holiday::2019.png is a file
        return Path(text).read_bytes()
    file, _, where = text.partition(SEP)
    if file.endswith(".tar"):
        off, _, size = where.partition("+")
        if not (off.isdigit() and size.isdigit()):
            raise OSError(f"{text!r} is not a tar member's locator")
        end = Path(file).stat().st_size
        if int(size) > MAX_MEMBER or int(off) + int(size) > end:   # bounded by the shard's real size
            raise OSError(f"{text!r} points past the end of {file} ({end:,} bytes)")
        with open(file, "rb") as f:
            f.seek(int(off))
            data = f.read(int(size))
        if len(data) != int(size):
            raise OSError(f"{file} is shorter than its index says (truncated shard?)")
        return data
    if file.endswith(".parquet"):
        column, _, row = where.partition("@")
        if not row.isdigit():
            raise OSError(f"{text!r} is not a parquet cell's locator")
        return _parquet_cell(Path(file), column, int(row))
    raise OSError(f"{text!r} is neither a file nor a locator the index wrote")


def _parquet_cell(file: Path, column: str, row: int) -> bytes:
    """One cell, reading (and keeping a few of) the row groups it lives in."""
    starts = _row_group_starts(str(file))
    rg = int(np.searchsorted(starts, row, side="right")) - 1
    if not 0 <= row < starts[-1]:
        raise OSError(f"{file} has no row {row}")
    key = (str(file), column, rg)
    with _parquet_lock:
        values = _parquet_cache.get(key)
    if values is None:
        values = pq.ParquetFile(file).read_row_group(rg, columns=[column]).column(0).to_pylist()
        with _parquet_lock:
            _parquet_cache[key] = values
            while len(_parquet_cache) > 8:
                _parquet_cache.popitem(last=False)
    return values[row - starts[rg]]


@lru_cache(maxsize=256)
def _row_group_starts(file: str) -> np.ndarray:
    """First row of each row group, and the total row count last."""
    meta = pq.ParquetFile(file).metadata
    return np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
