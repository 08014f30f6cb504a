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
