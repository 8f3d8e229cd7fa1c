"""Ingest source: a folder of images plus a captions file (JSONL or CSV).

JSONL: one object per line with `image` (path relative to the folder), and
`caption` (a string) or `captions` (a list); optional `id`; other fields go to
the record's meta. CSV: a header row with `image` and `caption` columns,
optional `id`, others to meta. Rows with the same id and image are one item
whose captions are merged (one row per caption is common); the same id with
another image is a duplicate and skipped. Files no row refers to are reported.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import attrs

from .candidate import Candidate
from .caption_text import clean_captions, read_text


@attrs.define
class Row:
    line: int
    image: str = ""
    id: str | None = None
    captions: list[Any] = attrs.field(factory=list)
    meta: dict[str, Any] = attrs.field(factory=dict)
    problem: str | None = None


def _row_from_mapping(line: int, fields: dict[str, Any]) -> Row:
    image = fields.pop("image", None)
    if not isinstance(image, str) or not image.strip():
        return Row(line=line, problem=f"bad row: line {line} has no 'image'")
    captions = fields.pop("captions", None)
    if captions is None:
        captions = [fields.pop("caption")] if "caption" in fields else []
    elif not isinstance(captions, list):
        captions = [captions]
    fields.pop("caption", None)
    item_id = fields.pop("id", None)
    return Row(
        line=line,
        image=image.strip(),
        id=None if item_id in (None, "") else str(item_id),
        captions=captions,
        meta=fields,
    )


def read_jsonl(text: str) -> list[Row]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            fields = json.loads(raw)
        except json.JSONDecodeError as exc:
            rows.append(Row(line=line, problem=f"bad row: line {line} is not JSON ({exc.msg})"))
            continue
        if not isinstance(fields, dict):
            rows.append(Row(line=line, problem=f"bad row: line {line} is not a JSON object"))
            continue
        rows.append(_row_from_mapping(line, fields))
    return rows


def read_csv(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "image" not in reader.fieldnames or "caption" not in reader.fieldnames:
        raise ValueError(f"CSV captions need 'image' and 'caption' columns, found {reader.fieldnames}")
    rows = []
    for fields in reader:
        line = reader.line_num
        extra = fields.pop(None, None)  # cells beyond the header
        row = _row_from_mapping(line, {k: v for k, v in fields.items() if v is not None})
        if extra and row.problem is None:
            row.meta["extra_cells"] = extra
        rows.append(row)
    return rows


def read_rows(captions_file: Path) -> list[Row]:
    text = read_text(captions_file.read_bytes())
    if captions_file.suffix.lower() == ".csv":
        return read_csv(text)
    return read_jsonl(text)


def folder_candidates(images: Path, captions_file: Path) -> list[Candidate]:
    """Every item of the folder, in captions-file order, then unreferenced files."""
    images = Path(images).resolve()
    source = captions_file.name
    planned: list[tuple[int, Candidate]] = []
    groups: dict[str, Row] = {}
    for row in read_rows(captions_file):
        if row.problem:
            planned.append((row.line, Candidate(key=f"{source}:{row.line}", problems=[row.problem], source=source)))
            continue
        item_id = row.id or row.image
        first = groups.get(item_id)
        if first is None:
            groups[item_id] = row
        elif first.image == row.image:
            first.captions.extend(row.captions)
            for name, value in row.meta.items():
                first.meta.setdefault(name, value)
        else:
            problem = f"duplicate id: {item_id!r} is line {first.line}'s item ({first.image})"
            planned.append(
                (row.line, Candidate(key=f"{item_id}@{source}:{row.line}", problems=[problem], source=source))
            )
    for item_id, row in groups.items():
        planned.append((row.line, _group_candidate(item_id, row, images, source)))
    referenced = {(images / row.image).resolve() for row in groups.values()}
    ordered = [candidate for _, candidate in sorted(planned, key=lambda pair: pair[0])]
    return ordered + _unreferenced(images, referenced, captions_file.resolve())


def _group_candidate(item_id: str, row: Row, images: Path, source: str) -> Candidate:
    path = (images / row.image).resolve()
    clean = clean_captions(row.captions)
    problems = []
    if not path.is_relative_to(images):
        problems.append(f"bad path: {row.image} is outside the image folder")
    elif not path.is_file():
        problems.append(f"missing image: {row.image}")
    if not clean.captions:
        problems.append("no usable caption")
    meta = {"id": item_id, "image": row.image, **row.meta}
    return Candidate(
        key=item_id,
        path=None if problems else path,
        captions=clean.captions,
        meta=meta,
        problems=problems,
        fixes=clean.fixes,
        source=f"{source}:{row.line}",
    )


def _unreferenced(images: Path, referenced: set[Path], captions_file: Path) -> list[Candidate]:
    found = []
    for path in sorted(p for p in images.rglob("*") if p.is_file()):
        relative = path.relative_to(images)
        if path in referenced or path == captions_file or any(part.startswith(".") for part in relative.parts):
            continue
        found.append(
            Candidate(
                key=f"unreferenced:{relative}",
                problems=["no caption: no row refers to this file"],
                source=str(relative),
            )
        )
    return found
