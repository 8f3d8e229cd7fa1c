"""T2I and I2T correctness of one example, judged by the oracles (docs/shapes.md, "Oracles").

Stated objects are matched one-to-one to scene objects by the assignment that
makes the most statements true; a stated object left without a partner makes
all its statements false.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import attrs
import numpy as np

from .caption_parser import CaptionParseError, StatedObject, parse_caption
from .image_oracle import read_image
from .scene import ObjectSpec, Scene, specs_from_json
from .spec import cell_row_column

ATTRIBUTES = ("colour", "shape", "size", "cell")


@attrs.frozen(kw_only=True)
class Judgement:
    """Whether an example is right overall and per check.

    `checks` holds the attributes (colour, shape, size, cell: nothing stated about
    it is false), `relation`, `count` (as many objects as stated) and, for I2T,
    `parsed`. `n_objects` is the number of objects in the reference scene (T2I:
    stated in the prompt).
    """

    correct: bool
    checks: Mapping[str, bool]
    n_objects: int


def relation_holds(name: str, a: ObjectSpec, b: ObjectSpec) -> bool:
    (row_a, column_a), (row_b, column_b) = cell_row_column(a.cell), cell_row_column(b.cell)
    return {
        "left of": column_a < column_b,
        "right of": column_a > column_b,
        "above": row_a < row_b,
        "below": row_a > row_b,
    }[name]


def _statements(stated: Sequence[StatedObject], partners: Sequence[ObjectSpec | None]) -> list[tuple[str, bool]]:
    """(check name, true?) for every statement under one assignment."""
    found = []
    for claim, obj in zip(stated, partners):
        for attribute in ATTRIBUTES:
            value = getattr(claim, attribute)
            if value is not None:
                found.append((attribute, obj is not None and getattr(obj, attribute) == value))
        if claim.relation is not None:
            name, other_index = claim.relation
            other = partners[other_index]
            holds = obj is not None and other is not None and relation_holds(name, obj, other)
            found.append(("relation", holds))
    return found


def best_statements(stated: Sequence[StatedObject], objects: Sequence[ObjectSpec]) -> list[tuple[str, bool]]:
    """The statements under the one-to-one assignment that makes the most of them true."""
    slots: list[ObjectSpec | None] = list(objects) + [None] * max(0, len(stated) - len(objects))
    best: list[tuple[str, bool]] | None = None
    for partners in itertools.permutations(slots, len(stated)):
        statements = _statements(stated, partners)
        if best is None or sum(ok for _, ok in statements) > sum(ok for _, ok in best):
            best = statements
    return best or []


def _checks(statements: list[tuple[str, bool]], *, count_ok: bool) -> dict[str, bool]:
    checks = {name: all(ok for kind, ok in statements if kind == name) for name in (*ATTRIBUTES, "relation")}
    checks["count"] = count_ok
    return checks


def t2i_correct(prompt: str, pixels: np.ndarray, *, size: int | None = None) -> Judgement:
    """Every stated object appears with its stated attributes, and no other object does."""
    stated = parse_caption(prompt)
    found = read_image(pixels, size=size or pixels.shape[0])
    checks = _checks(best_statements(stated, found), count_ok=len(found) == len(stated))
    return Judgement(correct=all(checks.values()), checks=checks, n_objects=len(stated))


def i2t_correct(caption: str, scene: Scene | Mapping[str, Any]) -> Judgement:
    """The caption parses, states nothing false about the scene and mentions every object."""
    objects = scene.specs if isinstance(scene, Scene) else specs_from_json(scene)
    try:
        stated = parse_caption(caption)
    except CaptionParseError:
        checks = dict.fromkeys((*ATTRIBUTES, "relation", "count", "parsed"), False)
        return Judgement(correct=False, checks=checks, n_objects=len(objects))
    checks = _checks(best_statements(stated, objects), count_ok=len(stated) == len(objects))
    checks["parsed"] = True
    return Judgement(correct=all(checks.values()), checks=checks, n_objects=len(objects))
