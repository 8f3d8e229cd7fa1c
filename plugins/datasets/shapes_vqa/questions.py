"""Every question a Shapes scene answers exactly, by type (docs/vqa.md, "Question types").

| type        | template                                   | answers                         | answer type |
|-------------|--------------------------------------------|---------------------------------|-------------|
| `colour`    | what colour is <ref>?                      | the six colours                 | other       |
| `shape`     | what shape is <ref>?                       | circle, square, triangle, cross | other       |
| `size`      | what size is <ref>?                        | small, large                    | other       |
| `position`  | where is <ref>?                            | the nine cell names             | other       |
| `counting`  | how many objects / <shape>s / <colour> objects are there? | 0 .. max_objects | number   |
| `existence` | is there a <colour> <shape>?               | yes, no                         | yes/no      |
| `relation`  | is <ref> to the left of / to the right of / above / below <ref>? | yes, no   | yes/no      |

<ref> names one object of the scene by the first of REFERENCE_FORMS that no other object matches and that
does not state what is asked (a position or relation question never names a cell): `the circle`, `the red
object`, `the small red circle`, `the object in the top left`. An object no allowed form singles out (two
objects alike in every attribute but the cell) is not asked about. Relations compare grid columns (left,
right) and rows (above, below), as the Shapes captions do; objects in the same column are neither left nor
right of each other. Counts are written as digits, the form the VQA normalisation turns number words into.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from ..shapes.captions import true_relations
from ..shapes.scene import ObjectSpec
from ..shapes.spec import CELLS, COLOURS, SHAPES, SIZES

QUESTION_TYPES = ("colour", "shape", "size", "position", "counting", "existence", "relation")
ANSWER_TYPES = {
    "colour": "other",
    "shape": "other",
    "size": "other",
    "position": "other",
    "counting": "number",
    "existence": "yes/no",
    "relation": "yes/no",
}
RELATIONS = ("to the left of", "to the right of", "above", "below")
# Simplest first: an object is named by the first form that singles it out.
REFERENCE_FORMS = (
    ("shape",),
    ("colour",),
    ("colour", "shape"),
    ("size", "shape"),
    ("size", "colour"),
    ("size", "colour", "shape"),
    ("cell",),
)
# What a question of each type may not name: its answer, and for positions and relations any cell.
NOT_NAMED = {
    "colour": {"colour"},
    "shape": {"shape"},
    "size": {"size"},
    "position": {"cell"},
    "relation": {"cell"},
}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

# type -> answer -> questions
Candidates = dict[str, dict[str, list[str]]]


def answers_of(question_type: str, *, max_objects: int) -> tuple[str, ...]:
    """Every answer a question of the type can have."""
    return {
        "colour": COLOURS,
        "shape": SHAPES,
        "size": tuple(SIZES),
        "position": CELLS,
        "counting": tuple(str(n) for n in range(max_objects + 1)),
        "existence": ("yes", "no"),
        "relation": ("yes", "no"),
    }[question_type]


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def reference_text(spec: ObjectSpec, form: Sequence[str]) -> str:
    if form == ("cell",):
        return f"the object in the {spec.cell}"
    words = [getattr(spec, attribute) for attribute in ("size", "colour", "shape") if attribute in form]
    return " ".join(["the", *words] if "shape" in form else ["the", *words, "object"])


def reference(spec: ObjectSpec, specs: Sequence[ObjectSpec], *, not_named: Iterable[str]) -> str | None:
    """How a question names `spec` among the scene's `specs`, without naming `not_named`; None if it cannot."""
    banned = set(not_named)
    for form in REFERENCE_FORMS:
        if banned & set(form):
            continue
        matching = [other for other in specs if all(getattr(other, a) == getattr(spec, a) for a in form)]
        if len(matching) == 1:
            return reference_text(spec, form)
    return None


def scene_questions(specs: Sequence[ObjectSpec], *, existence_pairs: Sequence[tuple[str, str]]) -> Candidates:
    """Every question of every type about the scene, grouped by type and exact answer.

    `existence_pairs`: the colour-shape pairs an existence question may name (held-out pairs stay out of train).
    """
    found: Candidates = {question_type: defaultdict(list) for question_type in QUESTION_TYPES}
    attribute_questions = {"colour": "what colour is {}?", "shape": "what shape is {}?", "size": "what size is {}?"}
    for spec in specs:
        for question_type, template in attribute_questions.items():
            ref = reference(spec, specs, not_named=NOT_NAMED[question_type])
            if ref is not None:
                found[question_type][getattr(spec, question_type)].append(template.format(ref))
        ref = reference(spec, specs, not_named=NOT_NAMED["position"])
        if ref is not None:
            found["position"][spec.cell].append(f"where is {ref}?")
    found["counting"][str(len(specs))].append("how many objects are there?")
    for shape in SHAPES:
        found["counting"][str(sum(s.shape == shape for s in specs))].append(f"how many {PLURALS[shape]} are there?")
    for colour in COLOURS:
        found["counting"][str(sum(s.colour == colour for s in specs))].append(f"how many {colour} objects are there?")
    present = {(s.colour, s.shape) for s in specs}
    for colour, shape in existence_pairs:
        answer = "yes" if (colour, shape) in present else "no"
        found["existence"][answer].append(f"is there {with_article(f'{colour} {shape}')}?")
    for first in specs:
        for second in specs:
            if first is second:
                continue
            refs = [reference(s, specs, not_named=NOT_NAMED["relation"]) for s in (first, second)]
            if None in refs:
                continue
            holds = true_relations(first, second)
            for relation in RELATIONS:
                answer = "yes" if relation in holds else "no"
                found["relation"][answer].append(f"is {refs[0]} {relation} {refs[1]}?")
    return {question_type: dict(answers) for question_type, answers in found.items() if answers}
