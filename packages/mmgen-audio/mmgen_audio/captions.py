"""Caption templates for sound clips (README.md, "Captions").

Four captions per clip, always in this order; the first, `full`, states every
attribute and is the one evaluation prompts use:

| template   | example                                                        | states                               |
|------------|----------------------------------------------------------------|--------------------------------------|
| `full`     | a loud long low beep followed by a quiet short noise burst     | loudness, duration, pitch, kind      |
| `then`     | a loud low beep, then a quiet noise burst                      | loudness, pitch, kind                |
| `pitch`    | a low beep followed by a noise burst                           | pitch, kind                          |
| `duration` | a long beep followed by a short noise burst                    | duration, kind                       |

Events are stated in the order they sound. Noise bursts and click trains have no pitch.
"""

from __future__ import annotations

from typing import Sequence

from .events import SoundEvent

TEMPLATES = {
    "full": (("loudness", "duration", "pitch"), " followed by "),
    "then": (("loudness", "pitch"), ", then "),
    "pitch": (("pitch",), " followed by "),
    "duration": (("duration",), " followed by "),
}


def event_phrase(event: SoundEvent, attributes: Sequence[str]) -> str:
    words = [getattr(event, a) for a in attributes if getattr(event, a) is not None]
    return " ".join(["a", *words, event.kind])


def caption(events: Sequence[SoundEvent], template: str = "full") -> str:
    attributes, joiner = TEMPLATES[template]
    return joiner.join(event_phrase(e, attributes) for e in events)


def make_captions(events: Sequence[SoundEvent]) -> tuple[str, ...]:
    return tuple(caption(events, template) for template in TEMPLATES)
