"""The CLI as a user meets it: exit codes, one-line errors, the commands end to end."""

import sys

import pandas as pd

from imgextract.cli import main


def cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["imgextract", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_empty_caption_file(monkeypatch, capsys, tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "empty.txt"
    caps.write_text("\n  \n")
    code, _, err = cli(monkeypatch, capsys, "generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r")
    assert code == 2
    line = error_line(err)
    assert str(caps) in line and "one caption per line" in line
    assert not (tmp_path / "r").exists()


def test_missing_model(monkeypatch, capsys, tmp_path):
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    code, _, err = cli(monkeypatch, capsys, "generate", caps, "--model", tmp_path / "nope", "--out", tmp_path / "r")
    assert code == 2
    line = error_line(err)
    assert str(tmp_path / "nope") in line and "does not exist" in line
    assert not (tmp_path / "r").exists()


def test_index_of_another_embedder(monkeypatch, capsys, tmp_path, pixel_index, train_dir):
    code, _, err = cli(monkeypatch, capsys, "scan", train_dir, "--index", "train-pixel", "--embedder",
                       "clip:ViT-B-32/openai", "--out", tmp_path / "s")
    assert code == 2
    line = error_line(err)
    assert "embedder.json" in line and "rebuild" in line
    assert not (tmp_path / "s").exists()


def test_missing_index(monkeypatch, capsys, tmp_path, train_dir, index_root):
    code, _, err = cli(monkeypatch, capsys, "scan", train_dir, "--index", "no-such-index")
    assert code == 2 and "imgextract index build" in error_line(err)


def test_folder_against_folder_end_to_end(monkeypatch, capsys, tmp_path, train_dir, photos):
    """`scan` on a plain folder against an index built from another plain folder."""
    from PIL import Image
    gens = tmp_path / "gens"
    gens.mkdir()
    Image.open(train_dir / "moon.png").save(gens / "moon_copy.jpg", quality=85)
    photos["flower"].resize((128, 128)).save(gens / "flower.png")
    idx = tmp_path / "idx"
    code, out, err = cli(monkeypatch, capsys, "index", "build", train_dir, "--name", idx)
    assert code == 0 and "indexed 10 images" in out and "corrupt.png" in err
    code, out, _ = cli(monkeypatch, capsys, "scan", gens, "--index", idx, "-k", "4", "--out", tmp_path / "scan")
    assert code == 0 and "1 memorized" in out and "moon.png" in out
    m = pd.read_parquet(tmp_path / "scan/matches.parquet")
    for col in ["generation_path", "train_id", "train_path", "rank", "tiled_l2", "l2", "phash_distance",
                "dhash_distance", "whash_distance", "memorized"]:
        assert col in m.columns
    assert len(m) == 8 and m.groupby("generation_path")["rank"].apply(list).map(sorted).tolist() == [[0, 1, 2, 3]] * 2
    code, out, _ = cli(monkeypatch, capsys, "report", tmp_path / "scan")
    assert code == 0
    html = (tmp_path / "scan/report.html").read_text()
    # one entry for the one memorized training image: training image, closest generation, tile map
    assert "moon_copy.jpg" in html and html.count("data-train-id=") == 1
    assert html.count("data:image/png;base64,") == 4 and "alt='tile distances'" in html  # pair, tiles, copied region
    assert "alt='copied region'" in html and "whole copy" in html


def test_help_has_examples(monkeypatch, capsys):
    for cmd in (["generate"], ["scan"], ["report"], ["run"], ["index", "build"], ["index", "search"]):
        code, out, _ = cli(monkeypatch, capsys, *cmd, "--help")
        assert code == 0 and "Example:" in out, cmd


def test_single_file_that_is_not_a_checkpoint(monkeypatch, capsys, tmp_path):
    from safetensors.numpy import save_file
    import numpy as np
    bogus = tmp_path / "model.safetensors"
    save_file({"weight": np.zeros((2, 2), np.float32)}, str(bogus))
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    code, _, err = cli(monkeypatch, capsys, "generate", caps, "--model", bogus, "--out", tmp_path / "r")
    assert code == 2
    line = error_line(err)
    assert str(bogus) in line and "--model-config" in line
