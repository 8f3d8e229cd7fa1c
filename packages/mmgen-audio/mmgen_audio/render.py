"""Renders a clip's events to a float32 waveform in [-1, 1] (spec.py says where and how each sounds)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .events import SoundEvent
from .spec import (
    CHIRP_RISE,
    CLICK_PERIOD,
    CLICK_SAMPLES,
    CLIP_SAMPLES,
    DURATIONS,
    FADE_SAMPLES,
    LOUDNESS,
    MAX_EVENTS,
    ONSET,
    PITCHES,
    SAMPLE_RATE,
    SLOT_SAMPLES,
)


def _fade(n: int) -> np.ndarray:
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(FADE_SAMPLES) / FADE_SAMPLES)
    envelope = np.ones(n)
    envelope[:FADE_SAMPLES], envelope[-FADE_SAMPLES:] = ramp, ramp[::-1]
    return envelope


def event_wave(event: SoundEvent, rng: np.random.Generator) -> np.ndarray:
    """One event's samples (peak amplitude = its loudness's)."""
    n = int(round(DURATIONS[event.duration] * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    if event.kind == "beep":
        wave = np.sin(2 * np.pi * PITCHES[event.pitch] * t) * _fade(n)
    elif event.kind == "chirp":
        start, seconds = PITCHES[event.pitch], n / SAMPLE_RATE
        rate = start * (CHIRP_RISE - 1) / seconds  # Hz per second, linear sweep
        wave = np.sin(2 * np.pi * (start * t + 0.5 * rate * t**2)) * _fade(n)
    elif event.kind == "noise burst":
        wave = rng.uniform(-1.0, 1.0, n) * _fade(n)
    else:  # click train: short decaying 1 kHz bursts every CLICK_PERIOD
        wave = np.zeros(n)
        tc = np.arange(CLICK_SAMPLES) / SAMPLE_RATE
        click = np.sin(2 * np.pi * 1000.0 * tc + np.pi / 2) * np.exp(-tc / 0.002)
        period = int(round(CLICK_PERIOD * SAMPLE_RATE))
        for start in range(0, n - CLICK_SAMPLES + 1, period):
            wave[start : start + CLICK_SAMPLES] = click
    wave = wave / max(np.abs(wave).max(), 1e-12)
    return (LOUDNESS[event.loudness] * wave).astype(np.float32)


def render(events: Sequence[SoundEvent], *, seed: int = 0) -> np.ndarray:
    """float32 [CLIP_SAMPLES]: event i in slot i; `seed` draws the noise bursts' samples."""
    if not 1 <= len(events) <= MAX_EVENTS:
        raise ValueError(f"a clip holds 1 to {MAX_EVENTS} events, got {len(events)}")
    rng = np.random.default_rng(seed)
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    for slot, event in enumerate(events):
        wave = event_wave(event, rng)
        start = slot * SLOT_SAMPLES + int(round(ONSET * SAMPLE_RATE))
        clip[start : start + len(wave)] = wave
    return clip
