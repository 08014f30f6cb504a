"""`imgextract generate` and `sample`: bad arguments, unsafe weights, caption tables, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd

from helpers import EXE, expect_error, first, run


def test_generate_and_sample_bad_arguments(tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--device", "bogus")
    expect_error(code, err, "--device 'bogus'", "cpu")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--batch-size", "0")
    expect_error(code, err, "--batch-size is 0")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", afile)
    expect_error(code, err, "--out", "is a file")
    assert not (tmp_path / "r").exists() and afile.read_text() == "not a folder"
    code, _, err = run("sample", "--model", tiny_pipeline_dir, "--prompt", "a", "--seed", "1", "--size", "30", "30",
                       "--out", tmp_path / "s.png")
    expect_error(code, err, "--size 30 30")
    code, _, err = run("sample", "--model", tiny_pipeline_dir, "--prompt", "a", "--seed", "1", "--steps", "0",
                       "--out", tmp_path / "s.png")
    expect_error(code, err, "--steps is 0")
    assert not (tmp_path / "s.png").exists()


def test_unsafe_weights_are_refused(tmp_path, tiny_pipeline_dir):
    import torch
    from safetensors.torch import load_file
    caps = tmp_path / "c.txt"
    caps.write_text("a cat\n")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline_dir, pickled)
    weights = next((pickled / "unet").glob("*.safetensors"))
    torch.save(load_file(str(weights)), pickled / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    code, _, err = run("generate", caps, "--model", pickled, "--out", tmp_path / "r1")
    expect_error(code, err, "refused as unsafe", "diffusion_pytorch_model.bin", "safetensors")
    custom = tmp_path / "custom"
    shutil.copytree(tiny_pipeline_dir, custom)
    index = json.loads((custom / "model_index.json").read_text())
    index["unet"] = ["my_unet", "MyUNet"]
    (custom / "model_index.json").write_text(json.dumps(index))
    (custom / "unet" / "my_unet.py").write_text("import os  # would run on load\n")
    code, _, err = run("generate", caps, "--model", custom, "--out", tmp_path / "r2")
    expect_error(code, err, "refused as unsafe", "custom code")
    clip_pickle = tmp_path / "clip.pt"
    torch.save({"w": torch.zeros(2)}, clip_pickle)
    code, _, err = run("index", "build", tmp_path, "--name", tmp_path / "ci", "--embedder", f"clip:{clip_pickle}")
    expect_error(code, err, "refused as unsafe", "clip.pt")
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "ci"))


def _caption_cases(tmp_path: Path) -> list:
    latin_txt = tmp_path / "latin.txt"
    latin_txt.write_bytes("a café at night\n".encode("latin-1"))
    latin_csv = tmp_path / "latin.csv"
    latin_csv.write_bytes("caption\ncafé au lait\n".encode("latin-1"))
    copies = tmp_path / "copies.csv"
    copies.write_text("caption,copies\na cat,3\na dog,many\n")
    lists = tmp_path / "lists.jsonl"
    lists.write_text('{"caption": ["a", "b"]}\n{"caption": ["c"]}\n')
    null_ids = tmp_path / "ids.csv"
    null_ids.write_text("id,caption\n1,a cat\n,a dog\n")
    quote = tmp_path / "quote.csv"
    quote.write_text('caption\n"a cat\na dog\na fish\n')
    membench = tmp_path / "SD1_final.csv"    # MemBench's form, one urls cell not a list of strings
    membench.write_text('prompt,urls\na cat,"[\'https://a/1.jpg\']"\na dog,"[1, 2]"\n')
    webster = tmp_path / "sdv1_500_memorized.jsonl"
    webster.write_text('{"caption": "a cat", "index": 5, "url": "https://a/1.jpg"}\n'
                       '{"caption": "a dog", "index": -3, "url": "https://a/2.jpg"}\n')
    return [(latin_txt, ["latin.txt", "not UTF-8", "line 1"]), (latin_csv, ["latin.csv", "not UTF-8"]),
            (copies, ["copies.csv", "row 2", "'many'"]), (lists, ["lists.jsonl", "lists", "row 1"]),
            (null_ids, ["ids.csv", "row 2"]), (quote, ["quote.csv"]),
            (membench, ["SD1_final.csv", "'urls' in row 2", "not a list of URLs"]),
            (webster, ["sdv1_500_memorized.jsonl", "'index' in row 2", "LAION row"])]


def test_bad_caption_tables(tmp_path, tiny_pipeline_dir):
    for path, words in _caption_cases(tmp_path):
        code, _, err = run("generate", path, "--model", tiny_pipeline_dir, "--out", tmp_path / "r")
        expect_error(code, err, *words)
        assert not (tmp_path / "r").exists()


def test_empty_captions_are_counted(tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "c.csv"
    caps.write_text('caption\na red square\n""\n   \na blue circle\n')
    code, out, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--samples", "1",
                         "--steps", "1", "--size", "32", "32")
    assert code == 0, err
    assert first(err) == f"warning: {caps}: skipped 2 empty caption(s) (rows 2, 3)"
    assert pd.read_parquet(tmp_path / "r" / "captions.parquet")["caption"].tolist() == ["a red square", "a blue circle"]


def test_ctrl_c_during_generate(tmp_path, tiny_pipeline_dir):
    caps = tmp_path / "c.txt"
    caps.write_text("\n".join(f"caption {i}" for i in range(400)) + "\n")   # minutes of work: SIGINT comes first
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    p = subprocess.Popen([str(EXE), "generate", str(caps), "--model", str(tiny_pipeline_dir), "--out", str(run_dir),
                          "--samples", "8", "--steps", "4", "--size", "32", "32", "--shard-size", "8",
                          "--batch-size", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # as a shell starts it: a pytest-xdist worker ignores SIGINT, and its children inherit that
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((run_dir / "samples").glob("shard-00000.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=60)
    err = p.stderr.read()
    assert code == 130, err
    interrupted = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert interrupted == ["interrupted: finished shards are kept; run the same command again to resume"], err
    assert "Traceback" not in err


def test_published_prompt_sets_are_read_as_they_are_and_said(tmp_path, tiny_pipeline_dir):
    """Webster's jsonl (caption, LAION index, url) and MemBench's CSV (prompt, urls as a Python list), as
    published: the form is said in a note, and the training images' URLs travel with the captions."""
    webster = tmp_path / "sdv1_500_memorized.jsonl"
    webster.write_text('{"caption": "Living in the Light with Ann Graham Lotz", "index": 24397, '
                       '"url": "https://images.example/lotz.jpg"}\n'
                       '{"caption": "The No Limits Business Woman Podcast", "index": 131087, '
                       '"url": "https://images.example/podcast.jpg"}\n')
    code, out, err = run("generate", webster, "--model", tiny_pipeline_dir, "--out", tmp_path / "w", "--samples", "1",
                         "--steps", "1", "--size", "32", "32")
    assert code == 0, err
    assert first(err) == f"note: {webster}: read as Webster's memorized-prompt set " \
                         "(sdv1_500_memorized.jsonl: caption, LAION index, url)"
    caps = pd.read_parquet(tmp_path / "w" / "captions.parquet")
    assert caps["caption"].tolist()[0] == "Living in the Light with Ann Graham Lotz"
    assert caps["laion_index"].tolist() == [24397, 131087]
    assert [list(u) for u in caps["train_urls"]] == [["https://images.example/lotz.jpg"],
                                                     ["https://images.example/podcast.jpg"]]
    membench = tmp_path / "SD1_final.csv"
    membench.write_text('prompt,urls\n"Mothers influence on her young hippo, a photograph",'
                        '"[\'https://a.example/1.jpg\', \'https://a.example/2.jpg\']"\n')
    from imgextract.sources.tables import read_captions
    t = read_captions(membench).to_pydict()
    assert t["caption"] == ["Mothers influence on her young hippo, a photograph"]
    assert t["train_urls"] == [["https://a.example/1.jpg", "https://a.example/2.jpg"]] and "laion_index" not in t
