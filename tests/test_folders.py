"""Deletion only of what imgextract made: the marker, no links, nothing outside."""

from __future__ import annotations

import pytest

from imgextract.errors import InputError


def test_remove_own_deletes_only_marked_folders_and_never_through_links(tmp_path):
    from imgextract.folders import TEMP_MARKER
    from imgextract.folders import remove_own
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(InputError):
        remove_own(foreign, foreign)  # no marker
    ours = tmp_path / "ours"
    (ours / "parts").mkdir(parents=True)
    (ours / TEMP_MARKER).write_text("")
    (ours / "link").symlink_to(foreign)
    with pytest.raises(InputError):
        remove_own(ours / "link", ours)  # a name inside our folder that leads outside it
    (ours / "escape").symlink_to(foreign, target_is_directory=True)
    with pytest.raises(InputError):
        remove_own(ours / "escape" / ".", ours)  # resolves outside the root
    assert (foreign / "keep.txt").read_text() == "user data"
    remove_own(ours / "parts", ours)
    assert not (ours / "parts").exists() and (ours / TEMP_MARKER).exists()
    remove_own(ours, ours)
    assert not ours.exists() and (foreign / "keep.txt").exists()


def test_a_run_json_look_alike_does_not_make_a_folder_ours(tmp_path):
    from imgextract.errors import InputError
    from imgextract.folders import check_out_folder
    from imgextract.rundir import remove_run
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "run.json").write_text('"imgextract_run"')     # the word, not imgextract's record
    (fake / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="did not make"):
        check_out_folder(fake)
    with pytest.raises(InputError, match="not an imgextract run folder"):
        remove_run(fake)
    assert (fake / "mine.txt").read_text() == "keep"
