"""`imgextract report RUN --paper`: the figures papers report, from the run's own evidence."""

from __future__ import annotations

import json

import pandas as pd

from helpers import expect_error, reference_copies, run


def test_paper_table_of_a_labelled_run(tmp_path, memorizing_model):
    """A labelled prompt set (Webster's ground-truth form: MV and N) swept on the toy: the 60x caption is extracted (a wide
    margin on any CPU), and the table counts exactly the copies that judging every sample against every
    training image finds (the captions the model never saw may draw a training image on some machine's
    float kernels: the table must count those as false flags), with its intervals."""
    from imgextract.demo.toy import training_set
    model, cfg = memorizing_model
    items, held = training_set(cfg)
    rows = [(items[0].caption, 1)] + [(h.caption, 0) for h in held[:3]]
    labelled = tmp_path / "groundtruth.parquet"   # Webster's ground-truth form: MV for the 60x image, N for the rest
    pd.DataFrame({"caption": [c for c, _ in rows], "url": [f"https://t.example/{i}.png" for i in range(4)],
                  "overfit_type": ["MV" if y else "N" for _, y in rows], "gen_seeds": [[0, 1]] * 4,
                  "retrieved_urls": [[]] * 4}).to_parquet(labelled)
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, _, err = run("index", "build", model / "train", "--name", "toy", env_extra=ix)
    assert code == 0, err
    code, _, err = run("generate", labelled, "--model", model, "--out", tmp_path / "r", "--samples",
                       "4", "--steps", "25", "--guidance", "3", "--device", "cpu", env_extra=ix)
    assert code == 0, err
    assert pd.read_parquet(tmp_path / "r" / "captions.parquet")["memorized"].tolist() == [True, False, False, False]
    code, _, err = run("scan", tmp_path / "r", "--index", "toy", env_extra=ix)
    assert code == 0, err
    code, out, err = run("report", tmp_path / "r", "--paper")
    assert code == 0, err
    block = json.loads((tmp_path / "r" / "paper.json").read_text())
    m = pd.read_parquet(tmp_path / "r" / "matches.parquet")
    ref = reference_copies(sorted(set(m["generation_path"])), model / "train")
    caption_of = dict(zip(m["generation_path"], m["caption"]))
    kinds = {c: set() for c, _ in rows}
    for g, found in ref.items():
        kinds[caption_of[g]].update(found.values())
    assert kinds[items[0].caption], "the 60x image was not drawn as a copy in any of 4 samples"
    clean = sum(bool(kinds[h.caption]) for h in held[:3])
    assert block["captions"] == 4 and block["extraction"]["with_copy"] == 1 + clean
    for kind in ("whole", "template"):
        assert block["by_kind"][kind]["with_copy"] == sum(kind in k for k in kinds.values()), kind
    e = block["extraction"]
    assert e["ci_low"] <= e["share"] == (1 + clean) / 4 <= e["ci_high"]
    lab = block["labelled"]
    assert (lab["memorized_prompts"]["with_copy"], lab["memorized_prompts"]["prompts"]) == (1, 1)
    assert (lab["clean_prompts"]["with_copy"], lab["clean_prompts"]["prompts"]) == (clean, 3)
    c = lab["clean_prompts"]
    assert c["ci_low"] <= clean / 3 <= c["ci_high"] and c["ci_high"] - c["ci_low"] > 0.4   # 3 prompts: wide
    assert f"| captions with a memorized sample (any kind) | {(1 + clean) / 4:.3f} [" in out and "(false flags)" in out
    assert "not measured" in block["sscd"]
    published = block["by_published_kind"]
    assert set(published) == {"whole", "none"}
    assert (published["whole"]["with_copy"], published["whole"]["prompts"]) == (1, 1)
    assert (published["none"]["with_copy"], published["none"]["prompts"]) == (clean, 3)
    assert published["whole"]["drew"]["whole"] == int("whole" in kinds[items[0].caption])
    assert "| published 'whole' prompts with a copy (drew: " in out


def test_paper_needs_a_scanned_run(tmp_path):
    code, _, err = run("report", tmp_path, "--paper")
    expect_error(code, err, f"{tmp_path} has no matches.parquet")
