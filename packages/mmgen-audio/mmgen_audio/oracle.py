"""The sound oracle: the events of a waveform, read back from its samples alone.

Per slot (spec.py), the event is the span from the first to the last 16 ms
frame whose peak passes ACTIVE; an empty slot has none. Of that span:
- kind: a click train when few 4 ms pieces come near the span's peak (clicks
  are short bursts with silence between); a noise burst when the spectrum is
  flat; otherwise a beep, or a chirp when its frequency rises by RISE;
- pitch (beep, chirp): the strongest frequency of the first third, low below
  SPLIT_HZ;
- loudness: the level a clean render peaks at (`level`), loud from LOUD;
- duration: the span, long from LONG_SECONDS.
Each threshold lies halfway (or further) between the values spec.py renders.
"""

from __future__ import annotations

import numpy as np

from .events import SoundEvent
from .spec import CLIP_SAMPLES, MAX_EVENTS, PITCHED, SAMPLE_RATE, SLOT_SAMPLES

FRAME = 128
PIECE = 32
ACTIVE = 0.06  # a frame's peak; quiet events peak at 0.2
LOUD = 0.4  # quiet 0.2, loud 0.7 (a noise burst's level: 0.82 times that)
LONG_SECONDS = 0.25  # short 0.15 s (click train: 0.09 s), long 0.35 s (click train: 0.33 s)
SPLIT_HZ = 750.0  # low 400 Hz, high 1200 Hz (a chirp's first third: 1.08 times that)
RISE = 1.15  # a chirp's last third over its first third: 1.31
FLAT = 0.3  # spectral flatness: white noise ~0.6, tones and clicks below 0.1
SPARSE = 0.4  # share of pieces near the peak: clicks ~0.15, the others ~1


def _span(slot: np.ndarray) -> tuple[int, int] | None:
    frames = np.abs(slot[: len(slot) // FRAME * FRAME]).reshape(-1, FRAME).max(axis=1)
    active = np.flatnonzero(frames >= ACTIVE)
    if len(active) == 0:
        return None
    return int(active[0]) * FRAME, (int(active[-1]) + 1) * FRAME


def strongest_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)), n=2 * SAMPLE_RATE))
    return float(np.argmax(spectrum) * SAMPLE_RATE / (2 * (len(spectrum) - 1)))


def flatness(samples: np.ndarray) -> float:
    pieces = samples[: len(samples) // 256 * 256].reshape(-1, 256) * np.hanning(256)
    power = (np.abs(np.fft.rfft(pieces, axis=1)) ** 2).mean(axis=0)[1:] + 1e-12
    return float(np.exp(np.log(power).mean()) / power.mean())


def sparseness(samples: np.ndarray) -> float:
    """The share of 4 ms pieces whose peak comes near the loud pieces' (the 90th percentile: robust to a spike)."""
    pieces = np.abs(samples[: len(samples) // PIECE * PIECE]).reshape(-1, PIECE).max(axis=1)
    return float((pieces >= 0.5 * np.quantile(pieces, 0.9)).mean())


def level(samples: np.ndarray, *, clicks: bool) -> float:
    """The peak amplitude a clean render had: a click train's peak; else sqrt(2) x the loudest frame's RMS
    (a resynthesised sound keeps its energy better than its peaks)."""
    if clicks:
        return float(np.abs(samples).max())
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    return float(np.sqrt(2 * (frames**2).mean(axis=1).max()))


def read_event(samples: np.ndarray) -> SoundEvent:
    """The event of one active span."""
    clicks = sparseness(samples) < SPARSE
    loudness = "loud" if level(samples, clicks=clicks) >= LOUD else "quiet"
    duration = "long" if len(samples) / SAMPLE_RATE >= LONG_SECONDS else "short"
    if clicks:
        kind = "click train"
    elif flatness(samples) >= FLAT:
        kind = "noise burst"
    else:
        third = max(len(samples) // 3, PIECE)
        first, last = strongest_hz(samples[:third]), strongest_hz(samples[-third:])
        kind = "chirp" if last >= RISE * first else "beep"
    pitch = None
    if kind in PITCHED:
        pitch = "low" if strongest_hz(samples[: max(len(samples) // 3, PIECE)]) < SPLIT_HZ else "high"
    return SoundEvent(kind=kind, pitch=pitch, loudness=loudness, duration=duration)


def read_clip(wave: np.ndarray) -> list[SoundEvent]:
    """The events heard in a float waveform of CLIP_SAMPLES, in slot order (an empty slot is skipped)."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(wave) != CLIP_SAMPLES:
        raise ValueError(f"the sound oracle reads clips of {CLIP_SAMPLES} samples, got {len(wave)}")
    events = []
    for slot in range(MAX_EVENTS):
        samples = wave[slot * SLOT_SAMPLES : (slot + 1) * SLOT_SAMPLES]
        span = _span(samples)
        if span is not None:
            events.append(read_event(samples[span[0] : span[1]]))
    return events
