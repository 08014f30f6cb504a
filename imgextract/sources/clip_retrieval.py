"""Precomputed embeddings as clip-retrieval's ``clip inference`` (and LAION's releases) lay them out.

``img_emb/img_emb_N.npy`` (float16, L2-normalised) and ``metadata/metadata_N.parquet``, row j of
one describing row j of the other. Parts are read in autofaiss's lexicographic order, so an
index id is the row in that concatenation.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from imgextract.errors import InputError
from imgextract.sources import fetch
from imgextract.sources.images import inside
from imgextract.sources.img2dataset import RENAMED, key_locators
from imgextract.sources.records import SourcePart, SourcePlan


def embedding_parts(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, img_emb/img_emb_N.npy, metadata/metadata_N.parquet) in the order autofaiss reads them
    (lexicographic file names), so an index id is the row in that concatenation."""
    folder = Path(folder)
    emb = sorted((folder / "img_emb").glob("img_emb_*.npy"), key=lambda p: p.name)
    if not emb:
        raise InputError(f"{folder} has no img_emb/img_emb_N.npy",
                         "pass the output folder of `clip-retrieval inference` (img_emb/ and metadata/)")
    out = []
    for e in emb:
        n = e.stem.removeprefix("img_emb_")
        meta = folder / "metadata" / f"metadata_{n}.parquet"
        if not meta.is_file():
            raise InputError(f"{e} has no metadata part {meta}", "every img_emb_N.npy needs metadata/metadata_N.parquet")
        out.append((n, e, meta))
    return out


def embedding_rows(meta: Path, keys: dict[str, str] | None, root: Path) -> tuple[list[dict], Counter]:
    """Index rows for one metadata part: where each image's pixels are, if anywhere (an
    img2dataset key of ``--images``, a file under ``root`` (``--images`` or the embeddings folder,
    nowhere else), else the row's URL, fetched on demand)."""
    table = pq.read_table(meta).to_pandas()
    rows, counts = [], Counter()
    for row in table.to_dict("records"):
        ref = row.pop("image_path", None)
        caption = row.pop("caption", None)
        path = None
        url = row.get("url")
        local = inside(root, str(ref)) if ref is not None else None
        if ref is not None and keys is not None and str(ref) in keys:
            path = keys[str(ref)]
        elif local is not None and local.is_file():
            path = str(local)
        elif isinstance(url, str) and fetch.is_url(url):
            path = url  # fetched on demand when a scan or guard needs it
        counts["pixels by URL (fetched on demand)" if path and fetch.is_url(path)
               else "pixels available" if path
               else f"pixels unavailable (image_path outside {root}: not read)" if ref is not None and local is None
               else "pixels unavailable"] += 1
        rows.append({"path": path or "", "caption": None if caption is None else str(caption),
                     "image_path": None if ref is None else str(ref),
                     "pixels": "available" if path else "unavailable",
                     "sha256": None, "width": None, "height": None, "phash": None, "dhash": None, "whash": None,
                     **{RENAMED.get(k, k): v for k, v in row.items()}})
    return rows, counts


def embeddings_plan(folder: Path, images: Path | None, embedder):
    """clip-retrieval output as build parts: vectors as given (re-normalised), rows from the metadata,
    pixels located through an img2dataset folder (``images``) or local paths when they exist."""
    parts = embedding_parts(folder)
    keys = key_locators(Path(images)) if images is not None else None

    shapes = {e: np.load(e, mmap_mode="r").shape for _, e, _ in parts}  # headers only: checked before any work
    for emb, shape in shapes.items():
        if len(shape) != 2 or shape[1] != embedder.dim:
            raise InputError(f"{emb} holds vectors of shape {shape}, not (n, {embedder.dim}) as "
                             f"{embedder.spec} makes", "name the model that made these embeddings with --embedder")

    def load(emb: Path, meta: Path) -> dict:
        vectors = np.load(emb).astype(np.float32)
        rows, counts = embedding_rows(meta, keys, Path(images) if images is not None else Path(folder))
        if len(rows) != len(vectors):
            raise InputError(f"{emb} has {len(vectors)} vectors but {meta} has {len(rows)} rows",
                             "row j of metadata_N.parquet must describe row j of img_emb_N.npy")
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):   # a NaN row would vanish from search, and an all-NaN part would answer nothing
            rows_text = ", ".join(map(str, bad[:5].tolist())) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise InputError(f"{emb}: {len(bad)} of {len(vectors)} vectors hold NaN or infinite values (rows {rows_text})",
                             "re-embed those images, or drop the rows from img_emb and metadata alike")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return {"rows": rows, "vectors": vectors / np.maximum(norms, 1e-12), "statuses": counts}

    return SourcePlan("embeddings", [SourcePart(n, (lambda e=e, m=m: load(e, m)), int(shapes[e][0]))
                                     for n, e, m in parts], [])
