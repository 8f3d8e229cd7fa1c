"""A log-mel spectrogram as a picture: time left to right, low frequencies at the bottom."""

from __future__ import annotations

import numpy as np

# Dark blue (silence) through teal and green to yellow (loud): a perceptually ordered ramp.
RAMP = np.array([[20, 20, 60], [30, 90, 140], [40, 160, 130], [150, 210, 60], [250, 230, 40]], dtype=np.float64)
LOW, HIGH = -9.2, 4.0  # log-mel of silence, and of a loud tone


def colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB along RAMP."""
    position = np.clip(values, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.floor(position).astype(int).clip(max=len(RAMP) - 2)
    weight = (position - low)[..., None]
    return ((1 - weight) * RAMP[low] + weight * RAMP[low + 1]).round().astype(np.uint8)


def spectrogram_picture(logmel: np.ndarray, *, height: int = 64) -> np.ndarray:
    """log-mel [n_mels, frames] -> uint8 [height, frames * 2, 3] (rows repeated to `height`, columns doubled)."""
    scaled = (np.asarray(logmel, dtype=np.float64) - LOW) / (HIGH - LOW)
    rows = np.repeat(scaled[::-1], max(1, height // scaled.shape[0]), axis=0)
    return colour(np.repeat(rows, 2, axis=1))
