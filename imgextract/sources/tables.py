"""Tables and folders of images, and caption files.

A folder of images (recursive; ``photo.png`` may have a sidecar ``photo.txt`` caption) or a
CSV/JSONL/Parquet table with an image-path column and a caption column. Columns play roles
(path, caption, id, url, licence) found by :func:`role_column`, by name or by the usual names.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from imgextract.errors import InputError
from imgextract.sources.images import IMAGE_SUFFIXES, list_image_files
from imgextract.sources.records import PART_SIZE, ImageRecord, SourcePart, SourcePlan


log = logging.getLogger("imgextract")

TABLE_SUFFIXES = {".csv", ".jsonl", ".json", ".parquet"}

PATH_COLUMNS = ("path", "image_path", "image", "file", "filepath", "file_name", "train_path")

CAPTION_COLUMNS = ("caption", "text", "prompt")

ID_COLUMNS = ("caption_id", "id")

SOURCE_COLUMNS = ("url", "source", "source_url")        # where a training image came from

LICENSE_COLUMNS = ("license", "licence", "license_url", "rights")  # img2dataset writes LICENSE

# The literature's prompt sets as published, told apart by their columns (data, not code paths; the first form
# whose columns a table has wins, so a form that refines another comes first): their training images' URLs become
# ``train_urls``, a LAION row ``laion_index``. A labelled form's ``kind`` column says what was copied, read through
# ``kinds`` onto KINDS (``memorized`` = a kind other than none); its ``carry`` columns travel with the captions.
KINDS = ("whole", "retrieved", "template", "none")   # its own image whole; another training image; a template; none
PROMPT_SETS = {
    "webster-groundtruth": {
        "columns": ("caption", "url", "overfit_type", "gen_seeds"), "urls": "url", "index": None,
        "kind": "overfit_type", "kinds": {"MV": "whole", "RV": "retrieved", "TV": "template", "N": "none"},
        "carry": {"gen_seeds": "ints", "retrieved_urls": "strings", "mse_real_gen": "number"},
        "says": "Webster's ground-truth labels (onestep-extraction's parquet: overfit_type MV/RV/TV/N, gen_seeds, "
                "retrieved_urls)"},
    "jeon": {
        "columns": ("caption", "url", "index", "overfit_type"), "urls": "url", "index": "index",
        "kind": "overfit_type", "kinds": {"MV": "whole", "TV": "template"}, "carry": {},
        "says": "Jeon et al.'s labelled prompt set (caption, url, LAION index, overfit_type MV/TV)"},
    "nemo": {
        "columns": ("Caption", "URL", "type"), "urls": "URL", "index": "Index",
        "kind": "type", "kinds": {"VM": "whole", "TM": "template"}, "carry": {"mean_sscd": "number", "max_sscd": "number"},
        "says": "NeMo's memorized LAION prompts (memorized_laion_prompts.csv: ';'-separated, type VM/TM, SSCD)"},
    "webster": {"columns": ("caption", "index", "url"), "urls": "url", "index": "index",
                "says": "Webster's memorized-prompt set (sdv1_500_memorized.jsonl: caption, LAION index, url)"},
    "membench": {"columns": ("prompt", "urls"), "urls": "urls", "index": None,
                 "says": "MemBench's trigger-prompt set (SD1_final.csv: prompt, urls as a list)"},
}
MAX_CARRIED = 4096      # items in one carried list cell (gen_seeds, retrieved_urls)
MAX_LISTED_ROWS = 20    # malformed CSV rows named one by one; the rest counted
MAX_URLS_TEXT = 65536   # a cell of MemBench's URL lists; more is not a list of training images

notes = logging.getLogger("imgextract.note")   # said to the user as "note: ..." (cli.main)


def prompt_set(columns) -> str | None:
    """Which published prompt set a caption table is, by its columns (None: a plain table)."""
    have = set(columns)
    return next((name for name, form in PROMPT_SETS.items() if set(form["columns"]) <= have), None)


def _whole_number(value, least: int, row: int, path: Path, column: str, what: str, remedy: str) -> int | None:
    """A cell that must be a whole number >= ``least`` ('3' is fine; 'many', 2.5 or NaN are not), or empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        n = float(str(value).strip())
    except ValueError:
        n = float("nan")
    if not np.isfinite(n) or n != int(n) or n < least:
        raise InputError(f"{path}: '{column}' in row {row + 1} is {value!r}, not {what}", remedy)
    return int(n)


def _row_number(value, row: int, path: Path) -> int | None:
    """Webster's ``index``: a LAION row number."""
    return _whole_number(value, 0, row, path, "index", "a LAION row number",
                         "give the row as a whole number >= 0, or leave it empty")


def _url_list(value, row: int, path: Path) -> list[str]:
    """A MemBench ``urls`` cell: a Python-literal list of URL strings (or one URL), bounded."""
    import ast
    if value is None:
        return []
    text = str(value).strip()
    if not text.startswith("["):
        return [text] if text else []
    try:
        if len(text) > MAX_URLS_TEXT:
            raise ValueError("too long")
        urls = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        urls = None
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise InputError(f"{path}: 'urls' in row {row + 1} is not a list of URLs",
                         "write it as MemBench does, e.g. ['https://a.jpg', 'https://b.jpg'], or leave it empty")
    return urls


def role_column(columns, candidates: tuple[str, ...], given: str | None = None, *, what: str = "",
                source: Path | None = None, required: bool = False) -> str | None:
    """The column playing a role: the one named by ``given`` (which must exist), else the first of the
    usual names ``candidates`` matched case-insensitively (LICENSE, License, license)."""
    columns = [str(c) for c in columns]
    if given:
        if given not in columns:
            raise InputError(f"{source} has no column '{given}' (columns: {', '.join(columns)})",
                             f"name the {what} column that exists")
        return given
    names = {c.lower(): c for c in columns}
    found = next((names[c] for c in candidates if c in names), None)
    if found is None and required:
        raise InputError(
            f"{source} has no {what} column (looked for {', '.join(candidates)}; has {', '.join(columns)})",
            f"rename the column or pass its name with --{what.replace(' ', '-')}-column")
    return found


def _read_csv(path: Path) -> pa.Table:
    """A CSV, ',' or ';' separated (the header line decides: NeMo's file is ';'-separated); a row with the wrong
    number of fields is listed with its line and skipped, the rest read."""
    with open(path, "rb") as f:
        head = f.readline(65536).decode("utf-8", "replace")
    delimiter = ";" if head.count(";") > head.count(",") else ","
    bad, more = [], [0]

    def skip(row) -> str:   # a few kept to be named, the rest counted: a hostile file is not held in memory
        if len(bad) < MAX_LISTED_ROWS:
            bad.append((row.number, row.actual_columns, row.expected_columns, (row.text or "")[:80]))
        else:
            more[0] += 1
        return "skip"
    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                           parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=skip))
    for number, fields, expected, text in bad:
        log.warning("%s: skipped malformed row at line %s (%d fields where the header has %d): %s", path,
                    number if number is not None else "?", fields, expected, text)
    if more[0]:
        log.warning("%s: skipped %d more malformed rows", path, more[0])
    return table


def read_table(path: Path) -> pa.Table:
    """Read a CSV, JSONL or Parquet table; the suffix decides the format."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in (".jsonl", ".json"):
            return pajson.read_json(path)
        if suffix == ".parquet":
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot parse table {path} ({first})",
                         "check that it is valid CSV, JSON Lines or Parquet") from exc
    raise InputError(f"{path} is not a table", f"use one of {sorted(TABLE_SUFFIXES)}")


def list_images(source: Path, image_column: str | None = None,
                caption_column: str | None = None) -> list[ImageRecord]:
    """All images a source names, in a stable order. Does not open them."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"image source {source} does not exist",
                         "pass a folder of images or a CSV/JSONL/Parquet table of image paths")
    if source.is_dir():
        files, bad = list_image_files(source)
        records = [ImageRecord(p, _sidecar(p), {}) for p in files]
        records += [ImageRecord(Path(b["path"]), None, {}, problem=b["reason"]) for b in bad]  # listed as skipped
        if not records:
            raise InputError(f"folder {source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                             "point at the folder that contains the training images")
        return records
    if source.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"image source {source} is neither a folder nor a table",
                         f"pass a folder or a table ({', '.join(sorted(TABLE_SUFFIXES))})")
    table = read_table(source)
    if table.num_rows == 0:
        raise InputError(f"table {source} has no rows", "give a table with one row per image")
    if image_column is None and not any(c.lower() in PATH_COLUMNS for c in table.column_names) \
            and role_column(table.column_names, ("url",)):
        raise InputError(f"table {source} names its images by URL only (no path column)",
                         "download them with img2dataset and index its output folder, or index the set's "
                         "precomputed embeddings with --embeddings (candidates' URLs are then fetched on demand)")
    pcol = role_column(table.column_names, PATH_COLUMNS, image_column, what="image", source=source, required=True)
    ccol = role_column(table.column_names, CAPTION_COLUMNS, caption_column, what="caption", source=source)
    rows = table.to_pylist()
    records = []
    for i, row in enumerate(rows):
        if "copies" in row:   # checked here, not when every scan has done its work and reads it
            row["copies"] = _copies(row["copies"], i, source)
        raw = Path(str(row.pop(pcol)))
        path = raw if raw.is_absolute() else (source.parent / raw)
        caption = row.pop(ccol) if ccol else None
        extra = {k: v for k, v in row.items() if k not in RESERVED_INDEX_COLUMNS}
        records.append(ImageRecord(path.resolve(), None if caption is None else str(caption)[:MAX_CAPTION], extra))
    return records


def _sidecar(image: Path) -> str | None:
    side = image.with_suffix(".txt")
    if not side.is_file():
        return None
    with open(side, "rb") as f:   # a sidecar is a caption: its first 4 x MAX_CAPTION bytes are plenty
        return f.read(4 * MAX_CAPTION).decode("utf-8", errors="replace").strip()[:MAX_CAPTION] or None


MAX_CAPTION = 2000   # characters kept of a caption: CLIP's tokenizer reads 77 tokens (~300 characters)

RESERVED_INDEX_COLUMNS = {"id", "path", "caption", "sha256", "width", "height", "phash", "dhash", "whash"}


def _utf8_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"caption file {path} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line})",
                         f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > captions.txt") from exc


def _column(table: pa.Table, col: str, path: Path, what: str) -> list:
    """A column as Python values, refusing types that would become nonsense prompts or ids."""
    typ = table.schema.field(col).type
    values = table[col].to_pylist()
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        row = next((i for i, v in enumerate(values) if v is not None and not _is_utf8(v)), 0)
        raise InputError(f"{path}: column '{col}' is not UTF-8 text (row {row + 1})",
                         f"re-save the table as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name}")
    if pa.types.is_nested(typ):
        row = next((i for i, v in enumerate(values) if v is not None), 0)
        raise InputError(f"{path}: {what} column '{col}' holds lists (row {row + 1}: {str(values[row])[:60]})",
                         f"give one {what} per row (join or explode the lists first)")
    return values


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def read_captions(path: Path, caption_column: str | None = None) -> pa.Table:
    """Captions to sample: ``.txt`` (one per line) or a table with a caption column.

    Returns a table with ``caption_id`` (string), ``caption``, ``train_path`` (nullable:
    the training image the caption belongs to) and ``copies`` (nullable: how often that
    image was in the training set, when known). The published prompt sets (:data:`PROMPT_SETS`:
    Webster's jsonl, MemBench's CSV) are recognised by their columns, said in a note, and add
    ``train_urls`` (and Webster's ``laion_index``). A value that would become a nonsense prompt
    (lists, non-UTF-8 bytes, a caption spanning lines from an unclosed quote) or a bad id or
    copy count is an error naming the row; empty captions are skipped with a counted warning.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"caption file {path} does not exist",
                         "pass a .txt file (one caption per line) or a CSV/JSONL/Parquet table")
    if path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in _utf8_text(path).splitlines()]
        rows = [i for i, ln in enumerate(lines) if ln]
        captions = [lines[i] for i in rows]
        ids = [str(i) for i in range(len(captions))]
        train = [None] * len(captions)
        copies = [None] * len(captions)
    else:
        table = read_table(path)
        ccol = role_column(table.column_names, CAPTION_COLUMNS, caption_column, what="caption", source=path,
                           required=True)
        icol = role_column(table.column_names, ID_COLUMNS)
        pcol = role_column(table.column_names, PATH_COLUMNS)
        kcol = "copies" if "copies" in table.column_names else None
        raw = _column(table, ccol, path, "caption")
        for i, c in enumerate(raw):
            if isinstance(c, str) and ("\n" in c or "\r" in c):
                raise InputError(f"{path}: the caption in row {i + 1} spans several lines (an unclosed quote?)",
                                 "close the quote, or remove line breaks inside captions")
        stripped = ["" if c is None else str(c).strip() for c in raw]
        rows = [i for i, c in enumerate(stripped) if c]
        captions = [stripped[i] for i in rows]
        if icol:
            id_values = _column(table, icol, path, "id")
            null = next((i for i in rows if id_values[i] is None or
                         (isinstance(id_values[i], float) and np.isnan(id_values[i]))), None)
            if null is not None:
                raise InputError(f"{path}: column '{icol}' is empty in row {null + 1}",
                                 "give every caption an id, or drop the column to number captions by row")
            ids = [str(id_values[i]) for i in rows]
        else:
            ids = [str(n) for n in range(len(rows))]
        train = [str((path.parent / str(table[pcol][i].as_py())).resolve())
                 if table[pcol][i].as_py() is not None else None for i in rows] if pcol else [None] * len(rows)
        copies = [_copies(v, i, path) for i, v in zip(rows, (_column(table, kcol, path, "copies")[i] for i in rows))] \
            if kcol else [None] * len(rows)
        form = prompt_set(table.column_names)
        if form:
            spec = PROMPT_SETS[form]
            cells = _column(table, spec["urls"], path, "urls")
            urls = [_url_list(cells[i], i, path) for i in rows]
            if spec["index"] and spec["index"] in table.column_names:
                values = _column(table, spec["index"], path, "index")
                laion = [_row_number(values[i], i, path) for i in rows]
            if spec.get("kind"):
                values = _column(table, spec["kind"], path, "label")
                published = [_published_kind(values[i], i, path, spec) for i in rows]
                carried = {col: [_carried(table[col][i].as_py(), how, i, path, col) for i in rows]
                           for col, how in spec["carry"].items() if col in table.column_names}
        lcol = role_column(table.column_names, LABEL_COLUMNS)
        if lcol:   # a labelled prompt set: which prompts are memorized (triage-eval's ground truth)
            values = _column(table, lcol, path, "label")
            labels = [_label(values[i], i, path, lcol) for i in rows]
        if "family" in table.column_names:  # a toy's copies.csv: the template family of each image, if any
            values = _column(table, "family", path, "family")
            family = [str(values[i]) if values[i] not in (None, "") else None for i in rows]
        empty = len(stripped) - len(rows)
        if empty:
            first = [i + 1 for i, c in enumerate(stripped) if not c][:5]
            log.warning("%s: skipped %d empty caption(s) (rows %s%s)", path, empty,
                        ", ".join(map(str, first)), ", ..." if empty > 5 else "")
    long = [i for i, c in enumerate(captions) if len(c) > MAX_CAPTION]
    if long:   # the text encoder reads 77 tokens; a megabyte caption only costs memory, time and report size
        captions = [c[:MAX_CAPTION] for c in captions]
        log.warning("%s: %d caption(s) longer than %d characters truncated (caption ids %s%s)", path, len(long),
                    MAX_CAPTION, ", ".join(ids[i] for i in long[:5]), ", ..." if len(long) > 5 else "")
    if not captions:
        raise InputError(f"caption file {path} holds no captions",
                         "put one caption per line (.txt) or give a table with a non-empty 'caption' column")
    if len(set(ids)) != len(ids):
        raise InputError(f"caption file {path} repeats caption ids",
                         "make the id column unique, or drop it to number captions by row")
    columns = {
        "caption_id": pa.array(ids, pa.string()),
        "caption": pa.array(captions, pa.string()),
        "train_path": pa.array(train, pa.string()),
        "copies": pa.array(copies, pa.int64()),
    }
    if path.suffix.lower() != ".txt" and "family" in table.column_names:
        columns["family"] = pa.array(family, pa.string())
    if path.suffix.lower() != ".txt" and lcol:
        columns["memorized"] = pa.array(labels, pa.bool_())
    if path.suffix.lower() != ".txt" and form:   # said once the whole file is read: an error comes alone
        spec = PROMPT_SETS[form]
        notes.info("%s: read as %s", path, spec["says"])
        columns["train_urls"] = pa.array(urls, pa.list_(pa.string()))
        if spec["index"] and spec["index"] in table.column_names:
            columns["laion_index"] = pa.array(laion, pa.int64())
        if spec.get("kind"):   # the published label: what was copied, and the label as written
            columns["memorized"] = pa.array([k != "none" for k, _ in published], pa.bool_())
            columns["published_kind"] = pa.array([k for k, _ in published], pa.string())
            columns["published_label"] = pa.array([w for _, w in published], pa.string())
            types = {"ints": pa.list_(pa.int64()), "strings": pa.list_(pa.string()), "number": pa.float64()}
            for col, values in carried.items():
                columns[col] = pa.array(values, types[spec["carry"][col]])
    return pa.table(columns)


LABEL_COLUMNS = ("memorized", "label", "is_memorized")


def _published_kind(value, row: int, path: Path, spec: dict) -> tuple[str, str]:
    """A published label (Webster's MV/RV/TV/N, Jeon's MV/TV, NeMo's VM/TM) → (kind, the label as written)."""
    word = str(value).strip() if value is not None else ""
    if word.upper() in spec["kinds"]:
        return spec["kinds"][word.upper()], word.upper()
    raise InputError(f"{path}: '{spec['kind']}' in row {row + 1} is {value!r}, not one of "
                     f"{', '.join(spec['kinds'])}", f"label every prompt with one of {', '.join(spec['kinds'])}, "
                     "as the published file does, or drop the row")


def _carried(value, how: str, row: int, path: Path, column: str):
    """A published column carried with the captions: a list of seeds, a list of URLs, or a number; bounded."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if how == "number":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"{path}: '{column}' in row {row + 1} is {value!r}, not a number",
                             "write a number, or leave it empty") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    ok = isinstance(value, list) and len(value) <= MAX_CARRIED and all(
        (isinstance(v, int) and not isinstance(v, bool)) if how == "ints" else isinstance(v, str) for v in value)
    if not ok:
        raise InputError(f"{path}: '{column}' in row {row + 1} is not a list of "
                         f"{'seeds' if how == 'ints' else 'URLs'} (at most {MAX_CARRIED})",
                         "write it as the published file does, a list per row")
    return value
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f"}


def _label(value, row: int, path: Path, column: str) -> bool:
    """A memorized/not label: a boolean, 0/1, or yes/no, true/false; an empty or other value is an error."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if value is not None else ""
    if word.endswith(".0"):
        word = word[:-2]
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise InputError(f"{path}: '{column}' in row {row + 1} is {value!r}, not a yes/no label",
                     "write 1 or 0 (true/false, yes/no) for every prompt")


def _copies(value, row: int, path: Path) -> int | None:
    """A copy count: a whole number >= 1, or empty."""
    return _whole_number(value, 1, row, path, "copies", "a whole number >= 1",
                         "write each copy count as a number like 3, or leave it empty")


def plan(source: Path, image_column: str | None = None, caption_column: str | None = None) -> SourcePlan:
    """A folder or table in parts of ``PART_SIZE`` images."""
    records = list_images(source, image_column, caption_column)
    kind = "folder" if Path(source).is_dir() else "table"
    parts = [SourcePart(f"{i // PART_SIZE:05d}", (lambda chunk=records[i:i + PART_SIZE]: (chunk, Counter())),
                        len(records[i:i + PART_SIZE])) for i in range(0, len(records), PART_SIZE)]
    return SourcePlan(kind, parts, [])
