"""Precomputed embeddings in clip-retrieval's layout: indexed as given, pixels through img2dataset keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers import expect_error, img2dataset, near_copy, run


def clip_retrieval_folder(i2d: Path, clip_dir: Path, out: Path) -> Path:
    """What `clip-retrieval inference` writes for an img2dataset webdataset folder: float16,
    L2-normalised image embeddings per part, and a metadata part whose rows match them."""
    import tarfile

    from imgextract.models.embedders import load_embedder
    embedder = load_embedder(f"clip:{clip_dir}", "cpu")
    (out / "img_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    for n, table in enumerate(sorted(i2d.glob("*.parquet"))):
        meta = pd.read_parquet(table)
        meta = meta[meta["status"] == "success"]
        with tarfile.open(i2d / f"{table.stem}.tar") as tf:
            images = [Image.open(tf.extractfile(f"{k}.jpg")).convert("RGB") for k in meta["key"]]
        vectors = embedder.embed(images).astype(np.float16)
        np.save(out / "img_emb" / f"img_emb_{n}.npy", vectors)
        pd.DataFrame({"image_path": meta["key"].tolist(), "caption": meta["caption"].tolist(),
                      "url": meta["url"].tolist(), "LICENSE": meta["LICENSE"].tolist(),
                      "NSFW": ["UNLIKELY"] * len(meta)}).to_parquet(out / "metadata" / f"metadata_{n}.parquet")
    return out


def test_precomputed_embeddings_index_without_embedding_again(served, tmp_path, photos):
    from imgextract.demo.tiny import save_tiny_clip
    i2d = img2dataset(served, "webdataset")
    clip = save_tiny_clip(tmp_path / "clip")
    emb = clip_retrieval_folder(i2d, clip, tmp_path / "emb")
    ix = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix")}
    code, stdout, err = run("index", "build", emb, "--name", "e", "--embeddings", "--embedder", f"clip:{clip}",
                            "--images", i2d, env_extra=ix)
    assert code == 0, err
    assert "from a embeddings source" in stdout and "8 pixels available" in stdout
    import faiss
    stored = faiss.read_index(str(tmp_path / "ix" / "e" / "index.faiss")).reconstruct_n(0, 8)
    given = np.concatenate([np.load(p) for p in sorted((emb / "img_emb").glob("*.npy"))]).astype(np.float32)
    assert np.allclose(stored, given / np.linalg.norm(given, axis=1, keepdims=True), atol=1e-6)  # the vectors as given
    gens = tmp_path / "gens"
    gens.mkdir()
    near_copy(photos["rocket"], 0).save(gens / "copy_rocket.png")
    photos["clock"].resize((64, 64)).save(gens / "unrelated.png")
    code, stdout, err = run("scan", gens, "--index", "e", "-k", "8", "--out", tmp_path / "s", env_extra=ix)
    assert code == 0, err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [(Path(r["url"]).name, r["license"]) for r in summary["memorized_images"]] == [("rocket.jpg", "cc-by-3")]
    code, stdout, err = run("guard", gens / "copy_rocket.png", "--index", "e", "-k", "8", env_extra=ix)
    assert code == 1 and f"{served['base']}/rocket.jpg" in stdout and "licence: cc-by-3" in stdout, stdout + err
    # no --images, no URL, no local path: no candidate's pixels can be reached; rows say so instead of a distance
    bare = tmp_path / "emb-no-url"
    shutil.copytree(emb, bare)
    for meta in (bare / "metadata").glob("*.parquet"):
        pd.read_parquet(meta).drop(columns=["url"]).to_parquet(meta)
    code, _, err = run("index", "build", bare, "--name", "bare", "--embeddings", "--embedder", f"clip:{clip}",
                       env_extra=ix)
    assert code == 0, err
    code, stdout, err = run("scan", gens, "--index", "bare", "-k", "3", "--out", tmp_path / "s2", env_extra=ix)
    assert code == 0, err
    m = pd.read_parquet(tmp_path / "s2" / "matches.parquet")
    assert (m["pixels"] == "unavailable").all() and m["tiled_l2"].isna().all() and not m["memorized"].any()
    code, stdout, err = run("guard", gens / "copy_rocket.png", "--index", "bare", env_extra=ix)
    expect_error(code, err, "could not be checked", "pixels are unavailable")  # never exit 0: that reads as "clean"
    code, _, err = run("index", "build", emb, "--name", "wrong", "--embeddings", "--embedder", "pixel", env_extra=ix)
    assert code == 2 and "not (n, 768)" in err, err
