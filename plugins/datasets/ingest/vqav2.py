"""Ingest source: VQAv2 (a questions JSON, an annotations JSON and the COCO image folder; docs/vqa.md).

Questions: `{"data_subtype": "val2014", "questions": [{image_id, question, question_id}]}`; annotations:
`{"annotations": [{question_id, image_id, question_type, answer_type, multiple_choice_answer,
answers: [{answer, answer_confidence, answer_id}] x 10}]}`. One item per question, keyed by its
question_id, holding its image (`COCO_<data_subtype>_<12-digit image_id>.jpg` in the folder, or the file an
image map names), the VQA text `question: <question> answer: <multiple_choice_answer>` as its caption, and
in its meta the VQA fields every VQA record has (shapes_vqa too): `question`, `answer`, `answers` (the ten),
`question_type`, `answer_type`, `question_id`, `image_id`, and `file_name`.

Nothing malformed stops the ingest: a question or annotation with a missing key or a value of the wrong
type, a question_id listed twice, an annotation without ten answers, whose image_id differs from its
question's, or that answers no question, a question without an annotation, an image the folder or map does
not have, and (in the ingest loop) an image that does not decode are each skipped with one reason that
says what and where (file and index, and the question_id where there is one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from mmgen.plugins.metrics.vqa_text import qa_text

from .candidate import Candidate
from .caption_text import clean_captions, read_text

HUMANS = 10
FILE_PATTERN = "COCO_{subtype}_{image_id:012d}.jpg"
QUESTION_FIELDS = {"question_id": int, "image_id": int, "question": str}
ANNOTATION_FIELDS = {
    "question_id": int,
    "image_id": int,
    "question_type": str,
    "answer_type": str,
    "multiple_choice_answer": str,
    "answers": list,
}


class VqaFileError(ValueError):
    """A whole file is unusable (not JSON, or not in the VQAv2 layout): nothing is ingested."""


@attrs.frozen(kw_only=True)
class Annotation:
    where: str  # "<file> annotations[i]"
    entry: dict[str, Any]
    problem: str | None = None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(Path(path).read_bytes()))
    except (OSError, ValueError) as exc:
        raise VqaFileError(f"{path}: not a readable JSON file ({exc})") from None


def listed(data: Any, key: str, path: Path) -> list[Any]:
    """The list under `key` of a VQAv2 file's data, or VqaFileError naming the file."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise VqaFileError(f"{path}: not a VQAv2 file (no {key!r} list at the top)")
    return data[key]


def field_problem(entry: Any, fields: dict[str, type]) -> str | None:
    """What is wrong with an entry's fields (the first missing key or wrong type), or None."""
    if not isinstance(entry, dict):
        return f"not an object ({type(entry).__name__})"
    for name, kind in fields.items():
        if name not in entry:
            return f"no {name!r}"
        value = entry[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{name!r} is {type(value).__name__}, not {kind.__name__}"
    return None


def answers_problem(answers: list[Any]) -> str | None:
    if len(answers) != HUMANS:
        return f"{len(answers)} answers, not {HUMANS}"
    for index, answer in enumerate(answers):
        if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
            return f"answers[{index}] has no text 'answer'"
    return None


def read_annotations(path: Path) -> tuple[dict[int, Annotation], list[Candidate]]:
    """Annotations by question_id (a bad one with a usable question_id included, with its problem), and
    skips for those that name no usable question_id or repeat one."""
    source = Path(path).name
    found: dict[int, Annotation] = {}
    skipped: list[Candidate] = []
    for index, entry in enumerate(listed(read_json(path), "annotations", path)):
        where = f"{source} annotations[{index}]"
        problem = field_problem(entry, ANNOTATION_FIELDS)
        if problem is None:
            problem = answers_problem(entry["answers"])
        question_id = entry.get("question_id") if isinstance(entry, dict) else None
        if not isinstance(question_id, int) or isinstance(question_id, bool):
            skipped.append(_skip(where, f"bad annotation: {problem}"))
        elif question_id in found:
            first = found[question_id].where
            skipped.append(_skip(where, f"duplicate annotation: question_id {question_id} is also at {first}"))
        else:
            found[question_id] = Annotation(where=where, entry=entry, problem=problem)
    return found, skipped


def vqav2_candidates(
    questions: Path,
    annotations: Path,
    images: Path,
    *,
    subtype: str | None = None,
    image_map: Path | None = None,
) -> list[Candidate]:
    """One candidate per question (good ones first, in file order), then the skips of whole annotations."""
    images = Path(images).resolve()
    source = Path(questions).name
    data = read_json(questions)
    entries = listed(data, "questions", questions)
    files = _image_files(data, questions, subtype=subtype, image_map=image_map)
    by_question, skipped = read_annotations(annotations)
    planned: list[Candidate] = []
    seen: dict[int, str] = {}
    for index, entry in enumerate(entries):
        where = f"{source} questions[{index}]"
        problem = field_problem(entry, QUESTION_FIELDS)
        if problem is None and not entry["question"].strip():
            problem = "'question' is empty"
        if problem is not None:
            planned.append(_skip(where, f"bad question: {problem}"))
            continue
        question_id = entry["question_id"]
        if question_id in seen:
            problem = f"duplicate question: question_id {question_id} is also at {seen[question_id]}"
            planned.append(_skip(where, problem))
            continue
        seen[question_id] = where
        annotation = by_question.pop(question_id, None)
        planned.append(_question(entry, annotation, where, images=images, files=files, annotations=annotations))
    for question_id, annotation in by_question.items():
        problem = f"annotation without question: question_id {question_id} is not in {source}"
        skipped.append(_skip(annotation.where, problem))
    return planned + skipped


def _skip(where: str, problem: str) -> Candidate:
    return Candidate(key=where, problems=[problem], source=where)


def _question(
    entry: dict[str, Any], annotation: Annotation | None, where: str, *, images: Path, files: Any, annotations: Path
) -> Candidate:
    question_id, image_id = entry["question_id"], entry["image_id"]
    named = f"{where}, question_id {question_id}"
    key = str(question_id)
    if annotation is None:
        problem = f"no annotation: {Path(annotations).name} has none for this question_id"
        return Candidate(key=key, problems=[problem], source=named)
    if annotation.problem is not None:
        return Candidate(key=key, problems=[f"bad annotation: {annotation.where}: {annotation.problem}"], source=named)
    found = annotation.entry
    if found["image_id"] != image_id:
        problem = f"bad annotation: {annotation.where}: image_id {found['image_id']} is not the question's {image_id}"
        return Candidate(key=key, problems=[problem], source=named)
    file_name = files(image_id)
    if file_name is None:
        problem = f"unknown image: image_id {image_id} is not in the image map"
        return Candidate(key=key, problems=[problem], source=named)
    path = (images / file_name).resolve()
    if not path.is_relative_to(images):
        return Candidate(key=key, problems=[f"bad path: {file_name} is outside the image folder"], source=named)
    if not path.is_file():
        return Candidate(key=key, problems=[f"unknown image: {file_name} (image_id {image_id})"], source=named)
    answer = found["multiple_choice_answer"]
    clean = clean_captions([qa_text(entry["question"], answer)])
    meta = {
        "question": entry["question"],
        "answer": answer,
        "answers": [a["answer"] for a in found["answers"]],
        "question_type": found["question_type"],
        "answer_type": found["answer_type"],
        "question_id": question_id,
        "image_id": image_id,
        "file_name": file_name,
    }
    return Candidate(key=key, path=path, captions=clean.captions, meta=meta, fixes=clean.fixes, source=named)


def _image_files(data: dict[str, Any], questions: Path, *, subtype: str | None, image_map: Path | None) -> Any:
    """image_id -> file name (None: unknown), from the image map or the COCO file pattern."""
    if image_map is not None:
        mapping = read_json(image_map)
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise VqaFileError(f"{image_map}: not an image map ({{image_id: file name}})")
        return lambda image_id: mapping.get(str(image_id))
    if subtype is None:
        subtype = data.get("data_subtype")
        if not isinstance(subtype, str):
            raise VqaFileError(f"{questions}: no 'data_subtype' to name images by; give the subtype or an image map")
    return lambda image_id: FILE_PATTERN.format(subtype=subtype, image_id=image_id)
