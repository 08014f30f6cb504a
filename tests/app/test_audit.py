"""`imgextract run CONFIG.toml` end to end on the tiny pipeline, and the report's escaping."""

import json

import pandas as pd
import pytest

from imgextract.app.audit import run_config
from imgextract.errors import InputError


def test_run_config_end_to_end(tmp_path, tiny_pipeline_dir, train_dir, index_root):
    caps = tmp_path / "caps.csv"
    caps.write_text('id,caption,file\nc1,"<script>alert(1)</script> astronaut",'
                    f'{train_dir / "astronaut.png"}\nc2,a cup of coffee,{train_dir / "coffee.png"}\n')
    cfg = tmp_path / "audit.toml"
    cfg.write_text(f"""
out = "run"
[index]
source = "{train_dir}"
name = "cfg-index"
[generate]
captions = "caps.csv"
model = "{tiny_pipeline_dir}"
samples = 2
steps = 2
guidance = 2.0
device = "cpu"
[scan]
k = 3
[report]
title = "audit <b>x</b>"
""")
    report = run_config(cfg)
    run = tmp_path / "run"
    assert report == run / "report.html"
    m = pd.read_parquet(run / "matches.parquet")
    assert len(m) == 4 * 3 and set(m["caption_id"]) == {"c1", "c2"}
    assert set(m["seed"].dropna().astype(int)) and m["rank"].max() == 2
    summary = json.loads((run / "summary.json").read_text())
    assert [r["caption_id"] for r in summary["per_caption"]] == ["c1", "c2"]
    html = report.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "audit &lt;b&gt;x&lt;/b&gt;" in html
    assert "imgextract sample --run" in html  # regenerate command per finding
    # a second run resumes: nothing regenerated
    stamp = (run / "samples/shard-00000.parquet").stat().st_mtime_ns
    run_config(cfg)
    assert (run / "samples/shard-00000.parquet").stat().st_mtime_ns == stamp


def test_config_missing_section(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text("[index]\nsource='x'\n")
    with pytest.raises(InputError, match=r"no \[generate\] section"):
        run_config(cfg)


def test_a_config_sections_keys_are_its_settings_fields_each_with_a_type():
    """[scan], [generate] and [cliques] map onto ScanParams, SamplingConfig and CliqueParams: a new field is a new
    key, and the file's values are type-checked before anything is built."""
    from dataclasses import fields

    from imgextract.app.audit import CLIQUE_KEYS, GENERATE_KEYS, SCAN_KEYS, TYPES
    from imgextract.app.settings import CliqueParams, SamplingConfig, ScanParams
    assert SCAN_KEYS == {f.name for f in fields(ScanParams)} - {"index"} == set(TYPES["scan"])
    assert {f.name for f in fields(SamplingConfig)} <= GENERATE_KEYS == set(TYPES["generate"])
    assert CLIQUE_KEYS == {f.name for f in fields(CliqueParams)} - {"grid"} == set(TYPES["cliques"])
