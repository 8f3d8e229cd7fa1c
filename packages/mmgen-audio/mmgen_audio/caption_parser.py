"""The caption oracle: from a caption, the events it states and what it says of each.

Grammar (every template in captions.py is an instance; words are lower-cased,
a trailing period is ignored):

    caption  := event ((" followed by " | ", then ") event)*
    event    := "a" [loudness] [duration] [pitch] kind
    kind     := "beep" | "chirp" | "noise burst" | "click train"

A pitch on a noise burst or a click train is outside the grammar.
"""

from __future__ import annotations

import attrs

from .spec import DURATIONS, KINDS, LOUDNESS, PITCHED, PITCHES, kind_words

JOINERS = (("followed", "by"), (",", "then"))
ADJECTIVES = (("loudness", LOUDNESS), ("duration", DURATIONS), ("pitch", PITCHES))


class CaptionParseError(ValueError):
    """The caption is outside the grammar."""


@attrs.frozen(kw_only=True)
class StatedEvent:
    """What a caption states about one event; None where it says nothing."""

    kind: str
    pitch: str | None = None
    loudness: str | None = None
    duration: str | None = None


def words_of(text: str) -> list[str]:
    return text.strip().lower().rstrip(".").replace(",", " , ").split()


def _event(words: list[str], pos: int, text: str) -> tuple[StatedEvent, int]:
    if pos >= len(words) or words[pos] != "a":
        raise CaptionParseError(f"expected 'a' at word {pos + 1} of {text!r}")
    pos += 1
    stated: dict[str, str] = {}
    for attribute, values in ADJECTIVES:
        if pos < len(words) and words[pos] in values:
            stated[attribute] = words[pos]
            pos += 1
    for kind in KINDS:
        parts = kind_words(kind)
        if tuple(words[pos : pos + len(parts)]) == parts:
            if "pitch" in stated and kind not in PITCHED:
                raise CaptionParseError(f"a {kind} has no pitch, but {text!r} gives it one")
            return StatedEvent(kind=kind, **stated), pos + len(parts)
    raise CaptionParseError(f"expected a sound ({', '.join(KINDS)}) at word {pos + 1} of {text!r}")


def parse_caption(text: str) -> list[StatedEvent]:
    """The stated events, in order; CaptionParseError for anything outside the grammar."""
    words = words_of(text)
    events, pos = [], 0
    while True:
        event, pos = _event(words, pos, text)
        events.append(event)
        if pos == len(words):
            return events
        joiner = tuple(words[pos : pos + 2])
        if joiner not in JOINERS:
            raise CaptionParseError(f"expected 'followed by' or ', then' at word {pos + 1} of {text!r}")
        pos += 2
