"""Webster's templates with masks: a folder whose ``metadata.parquet`` names each template image and its mask.

Webster (2023) publishes the layouts that template verbatims copy as ``templates/metadata.parquet``
(``url``, ``img_file``, ``mask_file``) beside the images. A mask is white where the template is
compared (the layout its copies share: his masks are 1 where a retrieved copy agrees with it) and black
where its copies vary; he scores a generation by the MSE over the white region. The mask travels with
its template into the index (``template_mask``: the file as published; ``template_region``: the region
itself, see :func:`imgextract.copies.region_to_text`), so a scan judges the template on that region.

Paths come from a stranger's metadata: each is resolved inside the folder, and one that leaves it (or
is missing) is listed as skipped with its reason, never opened.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from imgextract.errors import InputError
from imgextract.sources.images import inside
from imgextract.sources.records import PART_SIZE, ImageRecord, SourcePart, SourcePlan

METADATA = "metadata.parquet"
COLUMNS = ("img_file", "mask_file")     # the columns that make a folder Webster's templates (url is carried)
MAX_TEMPLATES = 1_000_000               # rows read from one metadata file: Webster's holds a few hundred


def detect(source: Path) -> Path | None:
    """``source/metadata.parquet`` when ``source`` is a folder whose metadata names images and masks."""
    meta = Path(source) / METADATA
    if not (Path(source).is_dir() and meta.is_file()):
        return None
    try:
        names = pq.read_schema(meta).names
    except Exception:   # not parquet: the folder is a folder of images, its metadata nobody's business
        return None
    return meta if set(COLUMNS) <= set(names) else None


def _cell(value) -> str | None:
    return None if value is None else str(value).strip() or None


def list_templates(source: Path, meta: Path) -> list[ImageRecord]:
    """One record per metadata row: the template image, its mask and URL; a row whose files are missing
    or outside the folder comes back with its ``problem`` (listed in skipped.json, the rest built)."""
    rows = pq.ParquetFile(meta).metadata.num_rows
    if rows > MAX_TEMPLATES:
        raise InputError(f"{meta} has {rows:,} rows, over the {MAX_TEMPLATES:,} templates one folder may hold",
                         "split the templates into several folders")
    table = pq.read_table(meta, columns=[c for c in ("img_file", "mask_file", "url", "caption")
                                         if c in pq.read_schema(meta).names]).to_pylist()
    if not table:
        raise InputError(f"{meta} lists no templates", "give one row per template (img_file, mask_file, url)")
    records = []
    for n, row in enumerate(table, 1):
        image, mask = _cell(row.get("img_file")), _cell(row.get("mask_file"))
        extra = {"url": _cell(row.get("url")), "template_mask": mask}
        problem, path, mask_path = None, inside(source, image) if image else None, inside(source, mask) if mask else None
        if image is None or mask is None:
            problem = f"row {n} of {METADATA} names no {'img_file' if image is None else 'mask_file'}"
        elif path is None or mask_path is None:
            problem = f"row {n} of {METADATA}: {image if path is None else mask} is outside {source}"
        elif not path.is_file() or not mask_path.is_file():
            problem = f"row {n} of {METADATA}: {image if not path.is_file() else mask} does not exist"
        records.append(ImageRecord(path or Path(source) / str(image or f"row-{n}"), _cell(row.get("caption")),
                                   extra, problem=problem, mask=mask_path if problem is None else None))
    return records


def plan(source: Path, meta: Path) -> SourcePlan:
    """The templates in parts of ``PART_SIZE``, as a folder's images are."""
    records = list_templates(Path(source), meta)
    parts = [SourcePart(f"{i // PART_SIZE:05d}", (lambda chunk=records[i:i + PART_SIZE]: (chunk, Counter())),
                        len(records[i:i + PART_SIZE])) for i in range(0, len(records), PART_SIZE)]
    return SourcePlan("templates", parts, [f"read as Webster's templates with masks ({meta.name}: "
                                           f"{len(records)} templates)"])
