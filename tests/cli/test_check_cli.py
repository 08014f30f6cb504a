"""`imgextract check` and `toy train`: unreadable works listed, foreign folders never touched, the transformer toy drawn."""

from __future__ import annotations



from helpers import expect_error, run


def test_check_lists_unreadable_works(tmp_path, tiny_pipeline_dir, photos):
    works = tmp_path / "works"
    works.mkdir()
    photos["chelsea"].resize((32, 32)).save(works / "cat.png")
    (works / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, err = run("check", works, "--model", tiny_pipeline_dir, "--samples", "1", "--steps", "1",
                         "--out", tmp_path / "c")
    assert code == 0, err
    assert "broken.png: unreadable:" in out and "not reproduced" not in out.split("broken.png:")[1].splitlines()[0]
    assert "cat.png: " in out


def test_check_out_with_a_foreign_index_folder(tmp_path, tiny_pipeline_dir, photos):
    works = tmp_path / "works"
    works.mkdir()
    photos["chelsea"].resize((32, 32)).save(works / "cat.png")
    foreign = tmp_path / "c" / "index"
    foreign.mkdir(parents=True)
    (foreign / "my-notes.txt").write_text("mine")
    code, _, err = run("check", works, "--model", tiny_pipeline_dir, "--samples", "1", "--steps", "1",
                       "--out", tmp_path / "c")
    expect_error(code, err, "not an imgextract index")
    assert (foreign / "my-notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1


def test_toy_train_refuses_a_foreign_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "essay.txt").write_text("do not touch")
    code, _, err = run("toy", "train", "--out", mine, "--vae-steps", "1", "--unet-steps", "1")
    expect_error(code, err, "not a toy model's")
    assert [p.name for p in mine.iterdir()] == ["essay.txt"]


def test_check_reconstruct_needs_its_calibration_images_and_says_so_before_any_work(tmp_path, tiny_pipeline_dir,
                                                                                   photos):
    works = tmp_path / "works"
    works.mkdir()
    photos["chelsea"].resize((32, 32)).save(works / "cat.png")
    base = ("check", works, "--model", tiny_pipeline_dir, "--samples", "1", "--steps", "1", "--out", tmp_path / "c")
    code, _, err = run(*base, "--reconstruct")
    expect_error(code, err, "--reconstruct needs calibration images the model never saw (--null FOLDER)")
    code, _, err = run(*base, "--null", works)
    expect_error(code, err, "--null was given without --reconstruct")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    code, _, err = run(*base, "--reconstruct", "--null", empty)
    expect_error(code, err, f"--null {empty} holds no readable image")
    code, _, err = run(*base, "--reconstruct", "--null", works, "--reconstruct-steps", "0")
    expect_error(code, err, "reconstruction steps is 0")
    code, _, err = run(*base, "--index", "no-such-index")
    expect_error(code, err, "index 'no-such-index' not found")
    assert not (tmp_path / "c").exists()


def test_toy_train_dit_saves_a_pipeline_generate_draws_from(tmp_path):
    """The transformer toy through the installed CLI: trained from a spec, saved as an SD3 pipeline folder
    (no T5: model_index.json names it null), drawn by generate through the sd3 family; a wrong --arch is
    refused before anything is written."""
    import json

    code, _, err = run("toy", "train", "--out", tmp_path / "bad", "--arch", "vit", "--vae-steps", "1")
    expect_error(code, err, "--arch vit is not a toy architecture")
    assert not (tmp_path / "bad").exists()
    toy = tmp_path / "dit"
    code, out, err = run("toy", "train", "--out", toy, "--arch", "dit", "--duplicates", "3x1,1x1",
                         "--vae-steps", "2", "--unet-steps", "2")
    assert code == 0, err
    index = json.loads((toy / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline" and index["text_encoder_3"] == [None, None]
    assert json.loads((toy / "toy.json").read_text())["arch"] == "dit"
    code, out, err = run("generate", toy / "train" / "copies.csv", "--model", toy, "--out", tmp_path / "run",
                         "--samples", "2", "--steps", "2", "--guidance", "3")
    assert code == 0, err
    assert len(list((tmp_path / "run" / "samples").rglob("*.png"))) == 4
    assert json.loads((tmp_path / "run" / "run.json").read_text())["family"] == "sd3"
