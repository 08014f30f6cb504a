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


def _webster_groundtruth(path, overfit=("MV", "RV", "TV", "N")):
    """A ground-truth parquet with exactly the columns and types of Webster's gather_groundtruth_labels.py."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    n = len(overfit)
    pq.write_table(pa.table({
        "caption": pa.array([f"caption {i}" for i in range(n)], pa.string()),
        "url": pa.array([f"https://laion.example/{i}.jpg" for i in range(n)], pa.string()),
        "overfit_type": pa.array(list(overfit), pa.string()),
        "gen_seeds": pa.array([[0, 3, 7], [1], [2, 5], []][:n] + [[]] * max(0, n - 4), pa.list_(pa.int64())),
        "retrieved_urls": pa.array([[], ["https://laion.example/other.jpg"], [], []][:n] + [[]] * max(0, n - 4),
                                   pa.list_(pa.string())),
        "template_indices": pa.array([[[1, 2]], [], [[4], [5, 6]], []][:n] + [[]] * max(0, n - 4),
                                     pa.list_(pa.list_(pa.int64()))),
        "mse_real_gen": pa.array([120.5, 2400.0, 900.0, None][:n] + [None] * max(0, n - 4), pa.float64()),
    }), path)
    return path


def test_webster_ground_truth_parquet_is_read_with_its_kinds_seeds_and_retrieved_urls(tmp_path, caplog):
    from imgextract.sources.tables import read_captions
    t = read_captions(_webster_groundtruth(tmp_path / "sdv1_bb_edge_groundtruth.parquet")).to_pydict()
    assert t["memorized"] == [True, True, True, False]
    assert t["published_kind"] == ["whole", "retrieved", "template", "none"]
    assert t["published_label"] == ["MV", "RV", "TV", "N"]
    assert t["gen_seeds"] == [[0, 3, 7], [1], [2, 5], []]
    assert t["retrieved_urls"][1] == ["https://laion.example/other.jpg"]
    assert t["train_urls"][2] == ["https://laion.example/2.jpg"] and t["mse_real_gen"][3] is None
    bad = _webster_groundtruth(tmp_path / "bad.parquet", ("MV", "N", "XV", "N"))
    with pytest.raises(InputError, match=r"'overfit_type' in row 3 is 'XV', not one of MV, RV, TV, N"):
        read_captions(bad)


def test_jeon_labels_keep_their_kinds(tmp_path):
    """Jeon et al.'s jsonl has Webster's columns plus overfit_type: its labels are no longer dropped."""
    from imgextract.sources.tables import read_captions
    jeon = tmp_path / "sd2_memorized.jsonl"
    jeon.write_text('{"caption": "a poster of a film", "url": "https://j.example/1.jpg", "index": 12, "overfit_type": "MV"}\n'
                    '{"caption": "a phone case", "url": "https://j.example/2.jpg", "index": 13, "overfit_type": "TV"}\n')
    t = read_captions(jeon).to_pydict()
    assert t["published_kind"] == ["whole", "template"] and t["memorized"] == [True, True]
    assert t["laion_index"] == [12, 13]


def test_nemo_semicolon_csv_is_read_and_its_malformed_rows_listed_and_skipped(tmp_path, caplog):
    """NeMo's memorized_laion_prompts.csv: ';'-separated, an unnamed row-number column first, type VM/TM, SSCD
    columns; two rows with a stray ';' are listed with their lines and skipped, the rest read."""
    from imgextract.sources.tables import read_captions
    nemo = tmp_path / "memorized_laion_prompts.csv"
    nemo.write_text(";Caption;URL;type;mean_sscd;max_sscd;Index\n"
                    "0;Mountain View, a print;https://n.example/0.jpg;VM;0.81;0.93;101\n"
                    "1;Broken; caption;https://n.example/1.jpg;VM;0.7;0.8;102\n"
                    "2;A phone case, blue;https://n.example/2.jpg;TM;0.55;0.71;103\n"
                    "3;also;broken;https://n.example/3.jpg;TM;0.5;0.6;104\n"
                    "4;The last one;https://n.example/4.jpg;VM;0.9;0.99;105\n")
    with caplog.at_level("WARNING", logger="imgextract"):
        t = read_captions(nemo).to_pydict()
    assert t["caption"] == ["Mountain View, a print", "A phone case, blue", "The last one"]
    assert t["published_kind"] == ["whole", "template", "whole"] and t["published_label"] == ["VM", "TM", "VM"]
    assert t["max_sscd"] == [0.93, 0.71, 0.99] and t["laion_index"] == [101, 103, 105]
    warned = [r.getMessage() for r in caplog.records if "malformed row" in r.getMessage()]
    assert len(warned) == 2 and "line 3" in warned[0] and "line 5" in warned[1], warned
