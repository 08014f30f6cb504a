"""URL tables: candidates' images fetched on demand, cached, dead links remembered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers import Quiet, near_copy, run


def test_url_table_fetches_only_candidates_once_and_remembers_dead_links(served, tmp_path, photos, monkeypatch):
    """LAION-style metadata with URLs and no images: scan fetches the candidates' images on demand into
    the cache, records each URL's status in the index folder, and never asks a dead link twice."""
    from imgextract.demo.tiny import save_tiny_clip
    clip = save_tiny_clip(tmp_path / "clip")
    from imgextract.models.embedders import load_embedder
    embedder = load_embedder(f"clip:{clip}", "cpu")
    rows = served["rows"]
    ims = [Image.open(served["www"] / Path(r["url"]).name).convert("RGB").resize((64, 64))
           if "missing" not in r["url"] else photos["moon"].resize((64, 64)) for r in rows]
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    np.save(tmp_path / "emb" / "img_emb" / "img_emb_0.npy", embedder.embed(ims).astype(np.float16))
    pd.DataFrame({"url": [r["url"] for r in rows], "caption": [r["caption"] for r in rows],
                  "LICENSE": [r["LICENSE"] for r in rows]}).to_parquet(tmp_path / "emb" / "metadata" / "metadata_0.parquet")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "IMGEXTRACT_CACHE": str(tmp_path / "cache")}
    code, stdout, err = run("index", "build", tmp_path / "emb", "--name", "u", "--embeddings", "--embedder",
                            f"clip:{clip}", env_extra=ix)
    assert code == 0 and "9 pixels by URL" in stdout, stdout + err
    gens = tmp_path / "gens"
    gens.mkdir()
    near_copy(photos["rocket"], 0).save(gens / "copy_rocket.png")
    photos["moon"].resize((64, 64)).save(gens / "moon.png")  # its nearest "training image" is the dead link
    Quiet.requests.clear()
    code, stdout, err = run("scan", gens, "--index", "u", "-k", "2", "--relative-n", "0", "--out", tmp_path / "s",
                            env_extra=ix)
    assert code == 0, err
    asked = list(Quiet.requests)
    assert len(asked) <= 2 * 2 + 2 and "/rocket.jpg" in asked and "/missing.jpg" in asked  # candidates only
    assert len(asked) < len(rows)
    assert asked.count("/missing.jpg") == 1  # a 404 is not retried
    status = [json.loads(line) for line in (tmp_path / "ix" / "u" / "url_status.jsonl").read_text().splitlines()]
    assert {Path(s["url"]).name: s["status"] for s in status}["missing.jpg"] == "404"
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [Path(r["url"]).name for r in summary["memorized_images"]] == ["rocket.jpg"]
    m = pd.read_parquet(tmp_path / "s" / "matches.parquet")
    assert (m.loc[m["train_path"].str.endswith("missing.jpg"), "pixels"] == "unavailable").all()
    Quiet.requests.clear()
    code, _, err = run("scan", gens, "--index", "u", "-k", "2", "--relative-n", "0", "--out", tmp_path / "s2",
                       env_extra=ix)
    assert code == 0, err
    assert Quiet.requests == []  # cached images, and the dead link remembered
    code, _, err = run("index", "build", served["root"] / "urls.parquet", "--name", "x", env_extra=ix)
    assert code == 2 and "by URL only" in err and "img2dataset" in err, err
