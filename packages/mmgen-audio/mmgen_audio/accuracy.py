"""Whether a generated sound, or a generated caption of a sound, is right: judged by the oracles.

Events are compared in order (first with first): a sound must hold as many
events as expected, each of the stated kind, pitch, loudness and duration; a
caption must parse, state as many events as the clip holds and nothing false.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs
import numpy as np

from .caption_parser import CaptionParseError, parse_caption
from .events import SoundEvent, events_from_json
from .oracle import read_clip

ATTRIBUTES = ("kind", "pitch", "loudness", "duration")


@attrs.frozen(kw_only=True)
class Judgement:
    correct: bool
    checks: Mapping[str, bool]  # each attribute (nothing stated about it is false), `count`; captions also `parsed`
    n_events: int


def compare(stated: Sequence[Any], actual: Sequence[SoundEvent]) -> dict[str, bool]:
    """Every attribute `stated` gives (None: nothing said) against the `actual` event in the same place."""
    checks = dict.fromkeys(ATTRIBUTES, True)
    for index, claim in enumerate(stated):
        partner = actual[index] if index < len(actual) else None
        for attribute in ATTRIBUTES:
            value = getattr(claim, attribute)
            if value is not None and (partner is None or getattr(partner, attribute) != value):
                checks[attribute] = False
    checks["count"] = len(stated) == len(actual)
    return checks


def sound_correct(wave: np.ndarray, expected: Sequence[Any]) -> Judgement:
    """A sound against the events it should hold (SoundEvents, or a caption's StatedEvents)."""
    heard = read_clip(wave)
    checks = compare(expected, heard)
    return Judgement(correct=all(checks.values()), checks=checks, n_events=len(expected))


def caption_correct(caption: str, actual: Sequence[SoundEvent]) -> Judgement:
    try:
        stated = parse_caption(caption)
    except CaptionParseError:
        checks = dict.fromkeys((*ATTRIBUTES, "count", "parsed"), False)
        return Judgement(correct=False, checks=checks, n_events=len(actual))
    checks = {**compare(stated, actual), "parsed": True}
    return Judgement(correct=all(checks.values()), checks=checks, n_events=len(actual))


def reference_events(reference: Mapping[str, Any]) -> tuple[SoundEvent, ...] | None:
    """The events a record's meta lists (the `sounds` and `scene_sounds` data sets write them), if any."""
    events = reference.get("events")
    return None if events is None else events_from_json(events)
