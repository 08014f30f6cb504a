"""One writer per folder: the lock refuses a second holder by name, re-enters in one process, dies with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgextract.errors import InputError
from imgextract.locks import check_free, exclusive

HOLD = "import sys, time\nfrom pathlib import Path\nfrom imgextract.locks import exclusive\n" \
       "with exclusive(Path(sys.argv[1]), 'x'):\n    print('held', flush=True)\n    time.sleep(60)\n"


def test_a_second_process_is_refused_with_the_holders_pid_then_takes_over(tmp_path):
    lock = tmp_path / "run" / ".imgextract.lock"
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        holder = json.loads(lock.with_name(lock.name + ".holder.json").read_text())
        assert holder["pid"] == p.pid
        with pytest.raises(InputError, match=f"pid {p.pid}"):
            with exclusive(lock, "run folder x"):
                pass
        with pytest.raises(InputError, match=f"pid {p.pid}"):   # the early check, before a model loads
            check_free(lock, "run folder x")
    finally:
        p.kill()
        p.wait()
    check_free(lock, "run folder x")      # a dead holder's lock is free
    absent = tmp_path / "new" / ".imgextract.lock"
    check_free(absent, "run folder new")   # nothing to check, and nothing made
    assert not absent.parent.exists()
    with exclusive(lock, "run folder x"):  # the dead holder's lock is taken over
        assert lock.with_name(lock.name + ".holder.json").is_file()
    assert not lock.with_name(lock.name + ".holder.json").exists()


def test_reentrant_within_one_process(tmp_path):
    lock = tmp_path / ".l.lock"
    with exclusive(lock, "a"):
        with exclusive(lock, "a"):   # an audit that generates, then scans into the same run
            pass
        holder = lock.with_name(lock.name + ".holder.json")
        assert holder.is_file()      # the inner exit does not release the outer hold
