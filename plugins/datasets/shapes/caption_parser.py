"""The caption oracle: from a caption, the objects and attributes it states.

Grammar (every template in captions.py is an instance; words are lower-cased,
a trailing period is ignored):

    caption := [prefix] clause (" and " clause)* [" on a white background"]
    prefix  := "a picture of " | "there is " | "an image of "
    clause  := object [" in the " cell] | object " " relation " " object
    object  := ("a" | "an") [size] [colour] shape
    relation:= "to the left of" | "to the right of" | "above" | "below"
"""

from __future__ import annotations

import attrs

from .spec import CELLS, PALETTE, SHAPES, SIZES

PREFIXES = (("a", "picture", "of"), ("there", "is"), ("an", "image", "of"))
SUFFIX = ("on", "a", "white", "background")
# Longest first, so "to the left of" is not read as something shorter.
RELATIONS = {
    ("to", "the", "left", "of"): "left of",
    ("to", "the", "right", "of"): "right of",
    ("above",): "above",
    ("below",): "below",
}
CELL_WORDS = sorted((tuple(c.split()) for c in CELLS), key=len, reverse=True)


class CaptionParseError(ValueError):
    """The caption is outside the grammar."""


@attrs.frozen(kw_only=True)
class StatedObject:
    """What a caption states about one object; None where it says nothing.

    `relation` is (relation, index of the other stated object): ("left of", 1)
    reads "this object is to the left of object 1" (columns compared; `above` /
    `below` compare rows).
    """

    shape: str
    colour: str | None = None
    size: str | None = None
    cell: str | None = None
    relation: tuple[str, int] | None = None


def normalise(text: str) -> list[str]:
    return text.strip().lower().rstrip(".").split()


class _Words:
    def __init__(self, words: list[str], text: str) -> None:
        self.words = words
        self.pos = 0
        self.text = text

    def peek(self, sequence: tuple[str, ...]) -> bool:
        return tuple(self.words[self.pos : self.pos + len(sequence)]) == sequence

    def take(self, sequence: tuple[str, ...]) -> bool:
        if self.peek(sequence):
            self.pos += len(sequence)
            return True
        return False

    def take_word(self, choices) -> str | None:
        if self.pos < len(self.words) and self.words[self.pos] in choices:
            self.pos += 1
            return self.words[self.pos - 1]
        return None

    def done(self) -> bool:
        return self.pos == len(self.words)

    def fail(self, expected: str) -> CaptionParseError:
        found = " ".join(self.words[self.pos : self.pos + 3]) or "the end"
        return CaptionParseError(f"caption {self.text!r}: expected {expected} at word {self.pos}, found {found!r}")


def _object(words: _Words) -> dict:
    if words.take_word(("a", "an")) is None:
        raise words.fail("'a' or 'an'")
    size = words.take_word(SIZES)
    colour = words.take_word(PALETTE)
    shape = words.take_word(SHAPES)
    if shape is None:
        raise words.fail(f"a shape {SHAPES}")
    return {"shape": shape, "colour": colour, "size": size}


def _cell(words: _Words) -> str:
    for cell in CELL_WORDS:
        if words.take(cell):
            return " ".join(cell)
    raise words.fail(f"a cell {CELLS}")


def _relation(words: _Words) -> str | None:
    for phrase, name in RELATIONS.items():
        if words.take(phrase):
            return name
    return None


def parse_caption(text: str) -> list[StatedObject]:
    """The objects a caption states, in order; raises CaptionParseError outside the grammar."""
    all_words = normalise(text)
    if all_words[-len(SUFFIX) :] == list(SUFFIX):
        all_words = all_words[: -len(SUFFIX)]
    words = _Words(all_words, text)
    for prefix in PREFIXES:
        if words.take(prefix):
            break
    stated: list[dict] = []
    while True:
        obj = _object(words)
        stated.append(obj)
        if words.take(("in", "the")):
            obj["cell"] = _cell(words)
        else:
            name = _relation(words)
            if name is not None:
                obj["relation"] = (name, len(stated))
                stated.append(_object(words))
        if words.done():
            return [StatedObject(**o) for o in stated]
        if not words.take(("and",)):
            raise words.fail("'and', 'in the <cell>', a relation or the end")
