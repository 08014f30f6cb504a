"""`imgextract labels verify` through the installed CLI, on the memorizing toy with planted label noise: the
60x image's caption labelled N, a singleton's labelled MV, one singleton's original left out of the index,
a caption the model never saw labelled N. The verified kinds must be what judging every sample against
every indexed training image finds (brute force, whatever this machine's float kernels drew), the
published seeds come first, the missing original is unreachable (never "clean"), and a killed verify
resumes to the same table."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from helpers import EXE, expect_error, reference_copies, run

KIND = {"whole": 3, "template": 2, "portion": 1}
ARGS = ("--seeds", "4", "--steps", "25", "--guidance", "3", "--device", "cpu", "--shard-size", "8")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, memorizing_model):
    from imgextract.demo.toy import training_set
    model, cfg = memorizing_model
    items, held = training_set(cfg)
    root = tmp_path_factory.mktemp("labels")
    indexed = root / "indexed"                 # what the index holds: every training image but items[2]
    indexed.mkdir()
    rows = []
    for it in items:
        if it is not items[2]:
            shutil.copy(model / "train" / f"{it.name}.png", indexed / f"{it.name}.png")
            rows.append((str(indexed / f"{it.name}.png"), it.caption, f"https://toy.example/{it.name}.png"))
    pd.DataFrame(rows, columns=["path", "caption", "url"]).to_csv(root / "train.csv", index=False)
    planted = {items[0].caption: "N", items[1].caption: "MV", items[2].caption: "MV"}
    captions = [it.caption for it in items] + [held[0].caption]
    names = [it.name for it in items] + [held[0].name]
    labels = [planted.get(c, "N") for c in captions]
    pd.DataFrame({"caption": captions, "url": [f"https://toy.example/{n}.png" for n in names], "overfit_type": labels,
                  "gen_seeds": [[7, 3]] + [[]] * (len(captions) - 1),
                  "retrieved_urls": [[]] * len(captions)}).to_parquet(root / "groundtruth.parquet")
    env = {"IMGEXTRACT_INDEX_DIR": str(root / "ix")}
    code, _, err = run("index", "build", root / "train.csv", "--name", "toy", env_extra=env)
    assert code == 0, err
    code, out, err = run("labels", "verify", root / "groundtruth.parquet", "--model", model, "--index", "toy",
                         "--out", root / "verify", *ARGS, env_extra=env)
    assert code == 0, err
    return root, model, items, held, out, env


def test_the_cleaned_labels_are_what_every_sample_against_every_indexed_image_shows(planted):
    root, model, items, held, out, _ = planted
    verified = pd.read_parquet(root / "verify" / "verified.parquet").set_index("caption")
    manifests = pd.concat(pd.read_parquet(p) for p in sorted((root / "verify" / "run" / "samples").glob("shard-*.parquet")))
    paths = [str(root / "verify" / "run" / f) for f in manifests["file"]]
    ref = reference_copies(paths, root / "indexed")
    for caption, grp in manifests.assign(path=paths).groupby("caption"):
        kinds = [max(ref[p].values(), key=KIND.get) if ref[p] else "none" for p in grp.sort_values("sample_index")["path"]]
        copying = [int(s) for s, k in zip(grp.sort_values("sample_index")["seed"], kinds) if k != "none"]
        strongest = max(kinds, key=lambda k: KIND.get(k, 0))
        row = verified.loc[caption]
        missing = caption == items[2].caption or caption == held[0].caption   # originals the index lacks
        assert row["verified_kind"] == ("unreachable" if missing and strongest == "none" else strongest), caption
        assert list(row["copying_seeds"]) == copying and row["copy_share"] == len(copying) / 4
        assert row["reachable"] == (not missing)
        assert (row["memorized"] is None) if row["verified_kind"] == "unreachable" else \
            row["memorized"] == (strongest != "none")
    sixty = verified.loc[items[0].caption]
    assert sixty["published_label"] == "N" and sixty["verified_kind"] != "none"    # the planted flip, found
    assert sixty["own_original"] and sixty["train_path"].endswith(f"{items[0].name}.png")
    assert list(sixty["seeds"])[:2] == [7, 3]                                        # published seeds first
    summary = json.loads((root / "verify" / "verify.json").read_text())
    table = summary["confusion"]
    assert table["N"][sixty["verified_kind"]] >= 1 and set(table) == {"MV", "N"}
    assert sum(table["MV"].values()) == 2 and sum(table["N"].values()) == 5
    for label in table:
        for kind, n in table[label].items():
            assert n == int(((verified["published_label"] == label) & (verified["verified_kind"] == kind)).sum())
    unreachable = verified.index[verified["verified_kind"] == "unreachable"]
    assert summary["agreement"]["unreachable"] == [str(verified.loc[c, "caption_id"]) for c in unreachable]
    assert set(unreachable) <= {items[2].caption, held[0].caption}
    assert "unreachable" in out.splitlines()[0] and f"{summary['agreement']['agree']} of" in out


def test_a_killed_verify_resumes_to_the_same_table(planted):
    root, model, *_, env = planted
    out = root / "killed"
    cmd = [str(EXE), "labels", "verify", str(root / "groundtruth.parquet"), "--model", str(model), "--index", "toy",
           "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "run" / "samples" / "shard-00000.parquet").is_file() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the verify finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (out / "verified.parquet").exists()
    code, _, err = run("labels", "verify", root / "groundtruth.parquet", "--model", model, "--index", "toy",
                       "--out", out, *ARGS, env_extra=env)
    assert code == 0, err
    assert "resuming" in err
    first = pd.read_parquet(root / "verify" / "verified.parquet")
    again = pd.read_parquet(out / "verified.parquet")
    pd.testing.assert_frame_equal(first, again)


def test_a_file_without_labels_or_an_index_that_is_missing_is_refused_before_the_model_loads(planted, tmp_path):
    root, *_, env = planted
    (tmp_path / "plain.txt").write_text("a caption\n")
    code, _, err = run("labels", "verify", tmp_path / "plain.txt", "--model", tmp_path / "no-model", "--index", "toy",
                       "--out", tmp_path / "o", env_extra=env)
    expect_error(code, err, "plain.txt", "no published labels")
    code, _, err = run("labels", "verify", root / "groundtruth.parquet", "--model", tmp_path / "no-model",
                       "--index", "nope", "--out", tmp_path / "o2", env_extra=env)
    expect_error(code, err, "index 'nope' not found", at_start=False)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


def test_triage_eval_on_the_verified_labels_beside_the_published_ones(planted, tmp_path):
    from sklearn.metrics import roc_auc_score
    root, model, *_, env = planted
    out = tmp_path / "eval.json"
    code, stdout, err = run("triage-eval", "--labels", root / "verify" / "verified.parquet", "--model", model,
                            "--out", out, "--samples", "2", "--schedule-steps", "4", "--bootstrap", "200",
                            "--methods", "edge", "--guidance", "3", env_extra=env)
    assert code == 0, err
    e = json.loads(out.read_text())
    verified = pd.read_parquet(root / "verify" / "verified.parquet")
    seen = verified[verified["verified_kind"] != "unreachable"]
    assert (e["prompts"]["memorized"], e["prompts"]["clean"]) == (int(seen["memorized"].astype(bool).sum()),
                                                                 int((~seen["memorized"].astype(bool)).sum()))
    assert e["prompts"]["unreachable"] == len(verified) - len(seen)
    assert (e["published"]["memorized"], e["published"]["clean"]) == (2, 5)
    per = pd.DataFrame(e["per_prompt"])
    cleaned = per[per["label"] >= 0]
    edge = next(r for r in e["scores"] if r["score"] == "edge")
    assert edge["auc"]["value"] == pytest.approx(roc_auc_score(cleaned["label"], cleaned["edge_score"]), abs=1e-12)
    edge = next(r for r in e["published"]["scores"] if r["score"] == "edge")
    assert edge["auc"]["value"] == pytest.approx(roc_auc_score(per["published"], per["edge_score"]), abs=1e-12)
    assert "on the verified labels" in stdout and "on the published labels (2 memorized, 5 clean" in stdout
    code, _, err = run("triage-eval", "--labels", root / "groundtruth.parquet", "--model", model, "--out",
                       tmp_path / "e2.json", env_extra=env)
    expect_error(code, err, "is not a `labels verify` table")
