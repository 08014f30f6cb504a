"""Every form a training set comes in, mapped to one reader: a :class:`SourcePlan` of parts.

``FORMS`` is the registry, kept as data (as open_clip keeps its model configs): each form has a
test that recognises it and a reader that plans it; the first form that recognises a source
reads it. Precomputed embeddings are a form the user names (``--embeddings``), since a folder
of ``.npy`` files could otherwise pass for something else.

    img2dataset   NNNNN.parquet (key, status) + tars, folders or an image-bytes column
    templates     Webster's templates: a folder with metadata.parquet (url, img_file, mask_file)
    folder        a directory of image files (sidecar .txt captions)
    table         .csv / .jsonl / .parquet with a path column
    embeddings    clip-retrieval output: img_emb/img_emb_N.npy + metadata/metadata_N.parquet
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from imgextract.errors import InputError
from imgextract.sources import clip_retrieval, img2dataset, tables, templates
from imgextract.sources.records import SourcePlan


@dataclass(frozen=True)
class Form:
    name: str
    detect: Callable[[Path], object]          # a truthy value when the source is in this form
    plan: Callable[..., SourcePlan]           # (source, what detect returned, **options) -> plan


def _tables(source: Path, _found, image_column: str | None = None, caption_column: str | None = None) -> SourcePlan:
    return tables.plan(source, image_column, caption_column)


FORMS = (
    Form("img2dataset", img2dataset.detect, lambda src, fmt, **_: img2dataset.plan(src, fmt)),
    Form("templates", templates.detect, lambda src, meta, **_: templates.plan(src, meta)),
    Form("folder", lambda src: src.is_dir(), _tables),
    Form("table", lambda src: True, _tables),  # anything else: the table reader says what is wrong with it
)


def plan_source(source: Path, image_column: str | None = None, caption_column: str | None = None, *,
                embeddings: bool = False, images: Path | None = None, embedder=None) -> SourcePlan:
    """Which form ``source`` is in, and its parts in a stable order.

    ``embeddings``: SOURCE is clip-retrieval output whose vectors ``embedder`` made; ``images``
    then names the img2dataset folder holding their pixels."""
    source = Path(source)
    if embeddings:
        return clip_retrieval.embeddings_plan(source, images, embedder)
    if images is not None:
        raise InputError("--images goes with --embeddings", "pass --embeddings when SOURCE holds precomputed vectors")
    for form in FORMS:
        found = form.detect(source)
        if found:
            return form.plan(source, found, image_column=image_column, caption_column=caption_column)
    raise AssertionError("the last form reads any source")  # pragma: no cover
