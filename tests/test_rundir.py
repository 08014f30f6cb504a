"""The run folder's files: written whole or not at all, and deleted only when provably a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgextract import rundir
from imgextract.errors import InputError


def test_atomic_writes_leave_no_temporary_and_replace_whole(tmp_path):
    rundir.write_json_atomic(tmp_path / "a" / "x.json", {"b": 1})
    rundir.write_parquet_atomic(tmp_path / "t.parquet", pd.DataFrame({"v": [1, 2]}))
    rundir.write_npy_atomic(tmp_path / "e.npy", np.arange(6, dtype=np.float16).reshape(2, 3))
    assert rundir.read_json(tmp_path / "a" / "x.json") == {"b": 1}
    assert pd.read_parquet(tmp_path / "t.parquet")["v"].tolist() == [1, 2]
    assert np.load(tmp_path / "e.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "m.parquet"
    rundir.write_parquet_atomic(path, pd.DataFrame({"v": [1]}))
    with pytest.raises(ZeroDivisionError):
        with rundir.atomic_file(path) as f:
            f.write(b"half a file")
            1 / 0
    assert pd.read_parquet(path)["v"].tolist() == [1]


def test_remove_run_deletes_only_a_run(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "run.json").write_text('{"something": "else"}')
    with pytest.raises(InputError, match="not an imgextract run folder"):
        rundir.remove_run(mine)
    assert (mine / "run.json").is_file()
    run = tmp_path / "run"
    rundir.write_json_atomic(run / "run.json", {"imgextract_run": 1})
    rundir.remove_run(run)
    assert not run.exists()
