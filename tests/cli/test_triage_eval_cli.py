"""`imgextract triage-eval`: the papers' detection figures for a model, from the prompt sets as published."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import expect_error, run

WEBSTER = ['{"caption": "Living in the Light with Ann Graham Lotz", "index": 24397, "url": "https://i.example/a.jpg"}',
           '{"caption": "The No Limits Business Woman Podcast", "index": 131087, "url": "https://i.example/b.jpg"}',
           '{"caption": "Anne Hathaway on the red carpet", "index": 5, "url": "https://i.example/c.jpg"}']
MEMBENCH = ('prompt,urls\n"a bowl of fruit on a table",\"[\'https://m.example/1.jpg\']\"\n'
            '"a lighthouse at dusk",\"[\'https://m.example/2.jpg\']\"\n'
            '"a dog running on a beach",\"[\'https://m.example/3.jpg\', \'https://m.example/4.jpg\']\"\n')


def test_triage_eval_scores_every_method_as_the_papers_do(tmp_path, tiny_pipeline_dir):
    from sklearn.metrics import roc_auc_score
    webster = tmp_path / "sdv1_500_memorized.jsonl"
    webster.write_text("\n".join(WEBSTER) + "\n")
    membench = tmp_path / "SD1_final.csv"
    membench.write_text(MEMBENCH)
    out = tmp_path / "eval.json"
    code, stdout, err = run("triage-eval", "--memorized", webster, "--clean", membench, "--model", tiny_pipeline_dir,
                            "--out", out, "--samples", "2", "--schedule-steps", "4", "--bootstrap", "200",
                            "--guidance", "3")
    assert code == 0, err
    assert f"note: {webster}: read as Webster's memorized-prompt set" in err and f"note: {membench}: read as" in err
    e = json.loads(out.read_text())
    assert (e["prompts"]["memorized"], e["prompts"]["clean"]) == (3, 3)
    by = {r["score"]: r for r in e["scores"]}
    assert set(by) == {"edge", "wen", "attn", "-end", "guide", "agree", "guide+edge", "wen+edge", "guide+wen"}
    for r in e["scores"]:
        for key in ("auc", "tpr_at_1pct_fpr", "tpr_at_3pct_fpr"):
            f = r[key]
            assert 0 <= f["ci_low"] <= f["value"] <= f["ci_high"] <= 1, (r["score"], key, f)
    assert by["wen"]["unet_evals_per_prompt"] == 4 and by["guide+edge"]["unet_evals_per_prompt"] == 8
    # the written figures are the per-prompt scores' own: recomputed here with sklearn
    per = pd.DataFrame(e["per_prompt"])
    assert len(per) == 6 and per["label"].sum() == 3
    for name, col, sign in (("edge", "edge_score", 1), ("-end", "attn_end", -1), ("guide", "guide_score", 1)):
        assert by[name]["auc"]["value"] == pytest.approx(roc_auc_score(per["label"], sign * per[col]), abs=1e-12)
    assert "| imgextract guide |" in stdout and "Asthana & Belagiannis (ICLR'26)" in stdout
    # the same files rank in triage (Webster's and MemBench's forms, as published)
    for source in (webster, membench):
        code, stdout, err = run("triage", source, "--model", tiny_pipeline_dir, "--out", tmp_path / "t.parquet",
                                "--samples", "2", "--schedule-steps", "4", "--methods", "guide,edge")
        assert code == 0, err
        ranked = pd.read_parquet(tmp_path / "t.parquet")
        assert len(ranked) == 3 and ranked["guide_score"].notna().all() and (ranked["unet_evals"] == 4 + 4).all()


def test_triage_eval_bad_inputs_are_refused_before_any_work(tmp_path, tiny_pipeline_dir):
    clean = tmp_path / "clean.txt"
    clean.write_text("a cat\na dog\n")
    base = ("triage-eval", "--model", tiny_pipeline_dir)
    code, _, err = run(*base, "--out", tmp_path / "e.json")
    expect_error(code, err, "no labelled prompts")
    code, _, err = run(*base, "--memorized", clean, "--out", tmp_path / "e.json")
    expect_error(code, err, "no labelled prompts")
    table = tmp_path / "labelled.csv"
    table.write_text("caption,memorized\na cat,1\na dog,maybe\n")
    code, _, err = run(*base, "--labelled", table, "--out", tmp_path / "e.json")
    expect_error(code, err, f"{table}: 'memorized' in row 2 is 'maybe'")
    table.write_text("caption,memorized\na cat,1\na dog,1\n")
    code, _, err = run(*base, "--labelled", table, "--out", tmp_path / "e.json")
    expect_error(code, err, "2 memorized and 0 clean")
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    code, _, err = run(*base, "--memorized", clean, "--clean", clean, "--out", mine)
    expect_error(code, err, f"--out {mine} exists and is not a triage evaluation")
    assert json.loads(mine.read_text()) == {"my": "notes"} and not (tmp_path / "e.json").exists()


def test_detection_figures_match_sklearns():
    from sklearn.metrics import roc_auc_score, roc_curve
    from imgextract.stats import bootstrap_metric, roc_auc, tpr_at_fpr
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(6, 300))
        y = rng.random(n) < 0.3
        if y.all() or not y.any():
            continue
        s = np.round(rng.normal(size=n) + y * rng.random(n), 1)        # rounded: ties included
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        f, t, _ = roc_curve(y, s, drop_intermediate=False)
        for x in (0.01, 0.03, 0.1):
            assert tpr_at_fpr(y, s, x) == pytest.approx(t[f <= x].max(), abs=1e-12)
    y = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    lo, hi = bootstrap_metric(y, np.array([3, 2, 1, 0.5, 0.4, 0.3, 0.2]), roc_auc, 200)
    assert lo == hi == 1.0                                            # perfectly separated: every resample too


def test_toy_evaluation_counts_shared_unet_calls_once(monkeypatch):
    """The held-out toy experiment (scripts/eval_triage.py, an experiment rather than a command)."""
    import importlib.util
    script = Path(__file__).resolve().parents[2] / "scripts" / "eval_triage.py"
    spec = importlib.util.spec_from_file_location("eval_triage", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "eval_triage", module)   # dataclasses look their module up there
    spec.loader.exec_module(module)
    ToySpec, toy_cost = module.ToySpec, module.toy_cost
    assert toy_cost("guide1") == toy_cost("wen1") == toy_cost("guide1+wen1") == 8   # the same first-step calls
    assert toy_cost("guide1+edge") == 16 and toy_cost("wen5+-end5") == 40
    spec = ToySpec.parse("100x1,10x4,1x27+faces@3")
    assert (spec.schedule, spec.seed, spec.faces) == ("100x1,10x4,1x27", 3, True) and "-faces-" in spec.name
    dit = ToySpec.parse("100x1,10x4,1x27+faces@3", "dit")   # the transformer toys are cached apart
    assert dit.arch == "dit" and dit.name.endswith("-dit") and dit.name != spec.name


def test_triage_measures_the_model_as_the_audit_sampled_it(tmp_path, tiny_pipeline_dir):
    """--run: guidance, schedule length and sampler come from the run's run.json, are said, and are recorded."""
    caps = tmp_path / "c.txt"
    caps.write_text("a red rocket\na cup of coffee\n")
    code, _, err = run("generate", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "r", "--samples", "1",
                       "--steps", "6", "--guidance", "2.5", "--scheduler", "euler", "--size", "32", "32")
    assert code == 0, err
    code, _, err = run("triage", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "t.parquet", "--samples", "2",
                       "--run", tmp_path / "r", "--guidance", "9")
    assert code == 0, err
    assert f"note: measuring the model as {tmp_path / 'r'} sampled it: guidance 2.5, 6 steps, EulerDiscreteScheduler" in err
    t = pd.read_parquet(tmp_path / "t.parquet")
    assert (t["param_guidance"] == 2.5).all() and (t["param_schedule_steps"] == 6).all()
    assert (t["param_scheduler"] == "EulerDiscreteScheduler").all() and t["param_run"].iat[0] == str(tmp_path / "r")
    code, _, err = run("triage", caps, "--model", tiny_pipeline_dir, "--out", tmp_path / "t2.parquet", "--run", caps)
    expect_error(code, err, f"--run {caps} is not an imgextract run folder")
    assert not (tmp_path / "t2.parquet").exists()


def test_webster_ground_truth_is_evaluated_overall_and_per_kind(tmp_path, tiny_pipeline_dir):
    """Webster's ground-truth parquet as published (MV/RV/TV/N, gen_seeds, retrieved_urls, nested
    template_indices) through the installed CLI: read as labels (it used to answer "has no 'memorized'
    column"), every figure overall and per kind; an unknown overfit_type is one error line naming the row."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    kinds = ["MV", "MV", "RV", "TV", "TV", "N", "N", "N"]
    n = len(kinds)
    gt = tmp_path / "sdv1_bb_edge_groundtruth.parquet"
    pq.write_table(pa.table({
        "caption": [f"a caption number {i}" for i in range(n)], "url": [f"https://l.example/{i}.jpg" for i in range(n)],
        "overfit_type": kinds, "gen_seeds": pa.array([[i, i + 1] for i in range(n)], pa.list_(pa.int64())),
        "retrieved_urls": pa.array([["https://l.example/r.jpg"] if k == "RV" else [] for k in kinds],
                                   pa.list_(pa.string())),
        "template_indices": pa.array([[[1, 2]] if k == "TV" else [] for k in kinds], pa.list_(pa.list_(pa.int64()))),
        "mse_real_gen": pa.array([float(i) for i in range(n)], pa.float64())}), gt)
    out = tmp_path / "eval.json"
    code, stdout, err = run("triage-eval", "--labelled", gt, "--model", tiny_pipeline_dir, "--out", out,
                            "--samples", "2", "--schedule-steps", "4", "--bootstrap", "200", "--methods", "wen,edge")
    assert code == 0, err
    assert f"note: {gt}: read as Webster's ground-truth labels" in err
    e = json.loads(out.read_text())
    assert (e["prompts"]["memorized"], e["prompts"]["clean"]) == (5, 3)
    assert e["prompts"]["kinds"] == {"whole": 2, "retrieved": 1, "template": 2}
    assert set(e["by_kind"]) == {"whole", "retrieved", "template"}
    per = pd.DataFrame(e["per_prompt"])
    for kind, figs in e["by_kind"].items():
        sub = per[(per["kind"] == kind) | (per["label"] == 0)]
        wen = next(r for r in figs["scores"] if r["score"] == "wen")
        from sklearn.metrics import roc_auc_score
        assert wen["auc"]["value"] == pytest.approx(roc_auc_score(sub["label"], sub["wen_score"]), abs=1e-12)
    assert "per published kind" in stdout and "retrieved (1)" in stdout
    bad = tmp_path / "bad_groundtruth.parquet"
    t = pq.read_table(gt).to_pandas()
    t.loc[6, "overfit_type"] = None
    pq.write_table(pa.Table.from_pandas(t, preserve_index=False), bad)
    code, _, err = run("triage-eval", "--labelled", bad, "--model", tiny_pipeline_dir, "--out", tmp_path / "b.json")
    expect_error(code, err, "'overfit_type' in row 7 is None, not one of MV, RV, TV, N")
    assert not (tmp_path / "b.json").exists()
