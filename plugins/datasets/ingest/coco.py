"""Ingest source: the COCO captions format (an annotations JSON plus an image folder).

`images`: [{id, file_name, ...}], `annotations`: [{id, image_id, caption}]. One
item per image, keyed by its id, with all its captions; a repeated image id, a
caption whose image id is not listed, or a listed file that is missing is
skipped with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .candidate import Candidate
from .caption_text import clean_captions, read_text


def coco_candidates(annotations: Path, images: Path) -> list[Candidate]:
    images = Path(images).resolve()
    data = json.loads(read_text(Path(annotations).read_bytes()))
    source = Path(annotations).name
    planned: list[Candidate] = []
    entries: dict[str, dict[str, Any]] = {}
    for position, entry in enumerate(data.get("images", [])):
        where = f"images[{position}]"
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            planned.append(
                Candidate(
                    key=f"{source}:{where}", problems=[f"bad entry: {where} needs id and file_name"], source=source
                )
            )
            continue
        image_id = str(entry["id"])
        if image_id in entries:
            problem = f"duplicate id: image id {image_id} is listed twice"
            planned.append(Candidate(key=f"{image_id}@{source}:{where}", problems=[problem], source=source))
            continue
        entries[image_id] = {"entry": entry, "captions": [], "annotation_ids": []}
    for position, annotation in enumerate(data.get("annotations", [])):
        where = f"annotations[{position}]"
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            planned.append(
                Candidate(key=f"{source}:{where}", problems=[f"bad entry: {where} has no image_id"], source=source)
            )
            continue
        image_id = str(annotation["image_id"])
        if image_id not in entries:
            problem = f"missing image: caption's image id {image_id} is not in the images list"
            planned.append(
                Candidate(key=f"annotation:{annotation.get('id', where)}", problems=[problem], source=source)
            )
            continue
        entries[image_id]["captions"].append(annotation.get("caption"))
        entries[image_id]["annotation_ids"].append(annotation.get("id"))
    items = [_image_candidate(image_id, found, images, source) for image_id, found in entries.items()]
    return items + planned


def _image_candidate(image_id: str, found: dict[str, Any], images: Path, source: str) -> Candidate:
    entry = found["entry"]
    path = (images / entry["file_name"]).resolve()
    clean = clean_captions(found["captions"])
    problems = []
    if not path.is_relative_to(images):
        problems.append(f"bad path: {entry['file_name']} is outside the image folder")
    elif not path.is_file():
        problems.append(f"missing image: {entry['file_name']}")
    if not clean.captions:
        problems.append("no usable caption")
    meta = {"coco_id": entry["id"], "file_name": entry["file_name"], "annotation_ids": found["annotation_ids"]}
    return Candidate(
        key=image_id,
        path=None if problems else path,
        captions=clean.captions,
        meta=meta,
        problems=problems,
        fixes=clean.fixes,
        source=source,
    )
