"""Caption templates for Shapes scenes (docs/shapes.md, "Captions").

Five captions per image. The first is always the `full` template, the one
evaluation prompts use; the other four are distinct templates drawn at random
from those that apply, so not every caption mentions every attribute:

| template     | example                                                          | states                      |
|--------------|------------------------------------------------------------------|-----------------------------|
| `full`       | a large red circle in the top left and a small blue square in the center | size, colour, shape, cell |
| `image_of`   | an image of a large red circle in the top left and a small blue square in the center | size, colour, shape, cell |
| `picture`    | a picture of a red circle in the top left and a blue square in the center | colour, shape, cell    |
| `there_is`   | there is a large red circle and a small blue square              | size, colour, shape         |
| `background` | a red circle and an orange square on a white background          | colour, shape               |
| `relation`   | a large red circle to the left of a small blue square and a green cross | size, colour, shape, one relation (2+ objects only) |

Relations compare grid positions: `to the left of` / `to the right of` compare
columns, `above` / `below` compare rows; only a true one is ever written.
Objects appear in scene order in `full` (the dataset's `object_order`: as drawn, or by
cell in reading order) and in a random order elsewhere.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .scene import ObjectSpec, Scene
from .spec import cell_row_column

CAPTIONS_PER_IMAGE = 5


def object_phrase(spec: ObjectSpec, *, size: bool, cell: bool) -> str:
    words = ([spec.size] if size else []) + [spec.colour, spec.shape]
    article = "an" if words[0][0] in "aeiou" else "a"
    phrase = " ".join([article, *words])
    return f"{phrase} in the {spec.cell}" if cell else phrase


def true_relations(a: ObjectSpec, b: ObjectSpec) -> list[str]:
    """Every relation phrase that holds for `a <relation> b`."""
    (row_a, column_a), (row_b, column_b) = cell_row_column(a.cell), cell_row_column(b.cell)
    found = []
    if column_a < column_b:
        found.append("to the left of")
    if column_a > column_b:
        found.append("to the right of")
    if row_a < row_b:
        found.append("above")
    if row_a > row_b:
        found.append("below")
    return found


def _joined(specs: Sequence[ObjectSpec], *, size: bool, cell: bool) -> str:
    return " and ".join(object_phrase(s, size=size, cell=cell) for s in specs)


def full(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> str:
    return _joined(specs, size=True, cell=True)


def image_of(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> str:
    return "an image of " + _joined(specs, size=True, cell=True)


def picture(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> str:
    return "a picture of " + _joined(specs, size=False, cell=True)


def there_is(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> str:
    return "there is " + _joined(specs, size=True, cell=False)


def background(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> str:
    return _joined(specs, size=False, cell=False) + " on a white background"


def relation(specs: Sequence[ObjectSpec], rng: np.random.Generator) -> str:
    first, second, *rest = specs
    options = true_relations(first, second)
    phrase = options[int(rng.integers(len(options)))]
    text = f"{object_phrase(first, size=True, cell=False)} {phrase} {object_phrase(second, size=True, cell=False)}"
    return " and ".join([text, *(object_phrase(s, size=False, cell=False) for s in rest)])


Template = Callable[[Sequence[ObjectSpec], np.random.Generator], str]
# name -> (template, fewest objects it needs)
TEMPLATES: dict[str, tuple[Template, int]] = {
    "full": (full, 1),
    "image_of": (image_of, 1),
    "picture": (picture, 1),
    "there_is": (there_is, 1),
    "background": (background, 1),
    "relation": (relation, 2),
}


def make_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five captions: `full` first, then four distinct other templates that apply."""
    specs = scene.specs
    others = [name for name, (_, fewest) in TEMPLATES.items() if name != "full" and len(specs) >= fewest]
    chosen = [others[i] for i in rng.permutation(len(others))[: CAPTIONS_PER_IMAGE - 1]]
    captions = [full(specs, rng)]
    for name in chosen:
        order = [specs[i] for i in rng.permutation(len(specs))]
        captions.append(TEMPLATES[name][0](order, rng))
    return captions


def prompt(specs: Sequence[ObjectSpec]) -> str:
    """The evaluation prompt for a scene's objects (the `full` template)."""
    return _joined(specs, size=True, cell=True)
