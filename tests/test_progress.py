"""Progress, one way: stages yield events, the caller shows them (or not)."""

from __future__ import annotations

from imgextract.progress import Bar, Note, Step, drain, show


def stage(n: int):
    yield Note("resuming: 1 shard(s) already done")
    for i in range(1, n + 1):
        yield Step("scan", i, n, "img", f"{i} seen")
    return "result"


def test_plain_log_lines_when_not_a_terminal(capsys):
    bar = Bar(200, "scan", "img")
    for i in range(1, 201):
        bar.update_to(i)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert 15 <= len(lines) <= 21 and "\r" not in "".join(lines)
    assert lines[-1].startswith("scan: 200/200 img (100%), done in ") and "img/s" in lines[-1]
    assert all(" s left" in line for line in lines[:-1])


def test_a_stage_with_nothing_to_do_says_done_not_a_stalled_rate(capsys):
    """An index of a few images (or a resumed run with nothing left) used to print "0.00 img/s, ETA unknown"."""
    for total, initial in ((0, 0), (3, 3)):
        bar = Bar(total, "index", "img", initial=initial)
        bar.update_to(total)
        bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all("done in" in line and "ETA" not in line and "0.00 img/s" not in line for line in lines), lines


def test_show_says_notes_draws_steps_and_returns_the_result(capsys):
    said = []
    assert show(stage(100), said.append) == "result"
    assert said == ["resuming: 1 shard(s) already done"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("scan: 100/100 img (100%)")


def test_drain_shows_nothing(capsys):
    assert drain(stage(10)) == "result"
    assert capsys.readouterr() == ("", "")
