"""WAV bytes <-> float32 waveforms, through soundfile (libsndfile)."""

from __future__ import annotations

import io

import numpy as np

from mmgen.api import UserError


class AudioFileError(UserError):
    """Bytes that are not a mono WAV file at the expected sample rate."""


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """A float waveform in [-1, 1] as 16-bit PCM WAV bytes (clipped to that range)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def read_wav(data: bytes, *, sample_rate: int, what: str = "audio item") -> np.ndarray:
    """float32 [N] of mono WAV bytes at `sample_rate`; AudioFileError (one line, naming `what`) otherwise."""
    import soundfile

    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports every unreadable file as a RuntimeError / LibsndfileError
        raise AudioFileError(f"{what}: not a readable WAV file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if rate != sample_rate:
        raise AudioFileError(f"{what}: sampled at {rate} Hz, expected {sample_rate} Hz (resample it first)")
    if wave.shape[1] != 1:
        raise AudioFileError(f"{what}: {wave.shape[1]} channels, expected mono")
    return wave[:, 0]
