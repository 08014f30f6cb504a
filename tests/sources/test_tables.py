"""Tables and folders: the role of each column, records in a stable order, caption files."""

from __future__ import annotations

import pytest

from imgextract.errors import InputError
from imgextract.sources import plan_source
from imgextract.sources.tables import LICENSE_COLUMNS, list_images, read_captions, role_column


def test_role_column_by_name_or_by_usual_names(tmp_path):
    assert role_column(["path", "LICENSE"], LICENSE_COLUMNS) == "LICENSE"
    assert role_column(["a", "b"], LICENSE_COLUMNS) is None
    assert role_column(["a", "b"], ("x",), "b") == "b"
    with pytest.raises(InputError, match="has no column 'c'"):
        role_column(["a", "b"], ("x",), "c", what="caption", source=tmp_path)
    with pytest.raises(InputError, match="no caption column"):
        role_column(["a"], ("caption",), what="caption", source=tmp_path, required=True)


def test_folder_records_are_sorted_with_sidecar_captions(train_dir):
    records = list_images(train_dir)
    names = [r.path.name for r in records]
    assert names == sorted(names) and "corrupt.png" in names  # listed like any file: it is refused when opened
    by = {r.path.name: r for r in records}
    assert by["coffee.png"].caption == "a photograph of coffee"
    plan = plan_source(train_dir)
    assert plan.kind == "folder" and len(plan.parts) == 1 and plan.parts[0].size == len(records)


def test_a_table_names_paths_relative_to_itself(tmp_path, train_dir):
    table = tmp_path / "t.csv"
    table.write_text(f"image,text,License\n{train_dir / 'rocket.png'},a rocket,cc0\n")
    (rec,) = list_images(table)
    assert rec.caption == "a rocket" and rec.extra == {"License": "cc0"}
    assert plan_source(table).kind == "table"


def test_caption_file_ids_and_copies(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("id,caption,copies\n7,a cat,3\n8,a dog,\n")
    t = read_captions(f).to_pydict()
    assert t["caption_id"] == ["7", "8"] and t["copies"] == [3, None]
