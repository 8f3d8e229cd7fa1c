"""A sound clip as data: its events in order, each with kind, pitch, loudness and duration."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs

from .spec import DURATIONS, KINDS, LOUDNESS, MAX_EVENTS, PITCHED, PITCHES


def _check(event: SoundEvent) -> None:
    if event.kind not in KINDS:
        raise ValueError(f"sound event: kind must be one of {KINDS}, got {event.kind!r}")
    if event.kind in PITCHED and event.pitch not in PITCHES:
        raise ValueError(f"sound event: a {event.kind}'s pitch must be one of {tuple(PITCHES)}, got {event.pitch!r}")
    if event.kind not in PITCHED and event.pitch is not None:
        raise ValueError(f"sound event: a {event.kind} has no pitch, got {event.pitch!r}")
    if event.loudness not in LOUDNESS:
        raise ValueError(f"sound event: loudness must be one of {tuple(LOUDNESS)}, got {event.loudness!r}")
    if event.duration not in DURATIONS:
        raise ValueError(f"sound event: duration must be one of {tuple(DURATIONS)}, got {event.duration!r}")


@attrs.frozen(kw_only=True)
class SoundEvent:
    kind: str
    pitch: str | None
    loudness: str
    duration: str

    def __attrs_post_init__(self) -> None:
        _check(self)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def events_to_json(events: Sequence[SoundEvent]) -> list[dict[str, Any]]:
    return [e.to_json() for e in events]


def events_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[SoundEvent, ...]:
    events = tuple(SoundEvent(**dict(item)) for item in data)
    if not 1 <= len(events) <= MAX_EVENTS:
        raise ValueError(f"a clip holds 1 to {MAX_EVENTS} events, got {len(events)}")
    return events
