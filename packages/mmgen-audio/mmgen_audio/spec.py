"""The constants of the Sounds specification (README.md, "Sounds"), in one place.

A clip is `CLIP_SAMPLES` samples at `SAMPLE_RATE` Hz holding one event per
slot, in order: event i starts `ONSET` seconds into slot i and lasts its
duration; everything else is exact silence. Every value below is far from the
oracle's thresholds (oracle.py), so it reads a clean render back exactly.
"""

from __future__ import annotations

SAMPLE_RATE = 8000
CLIP_SAMPLES = 8192  # 1.024 s: 64 STFT hops of 128 samples
SLOT_SAMPLES = CLIP_SAMPLES // 2  # two slots: "<first> followed by <second>"
MAX_EVENTS = 2
ONSET = 0.05  # seconds from the slot's start to the event's

KINDS = ("beep", "chirp", "noise burst", "click train")
PITCHED = ("beep", "chirp")  # noise bursts and click trains have no pitch
PITCHES = {"low": 400.0, "high": 1200.0}  # Hz; a chirp rises from its pitch to CHIRP_RISE times it
CHIRP_RISE = 1.5
LOUDNESS = {"quiet": 0.2, "loud": 0.7}  # peak amplitude
DURATIONS = {"short": 0.15, "long": 0.35}  # seconds
CLICK_PERIOD = 0.08  # seconds between the clicks of a click train (5 STFT hops: a tokenizer can resolve them)
CLICK_SAMPLES = 48  # each click: a decaying 1 kHz burst of 6 ms
FADE_SAMPLES = 40  # raised-cosine edges (5 ms), so a tone starts and stops without a click


def kind_words(kind: str) -> tuple[str, ...]:
    return tuple(kind.split())
