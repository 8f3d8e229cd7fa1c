"""Log-mel features and their inverse (Griffin-Lim), with torch's own STFT."""

from __future__ import annotations

import math

import torch

LOG_FLOOR = 1e-4  # the log-mel of silence: log(1e-4) ~ -9.2


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filters(*, n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters evenly spaced on the HTK mel scale, 0 Hz to Nyquist."""
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(0.0, float(hz_to_mel(torch.tensor(sample_rate / 2.0))), n_mels + 2, dtype=torch.float64))
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising, falling = (bins - low) / (centre - low), (high - bins) / (high - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = (filters.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{n_mels} mel bands are too many for an STFT of {n_fft} points: bands {empty} hold no bin")
    return filters.float()


def magnitudes(wave: torch.Tensor, *, n_fft: int, hop: int) -> torch.Tensor:
    """[B, N] -> |STFT| [B, n_fft // 2 + 1, N // hop + 1] (centred Hann frames)."""
    window = torch.hann_window(n_fft, device=wave.device)
    return torch.stft(wave, n_fft, hop_length=hop, window=window, center=True, return_complex=True).abs()


def griffin_lim(magnitude: torch.Tensor, *, n_fft: int, hop: int, length: int, iterations: int) -> torch.Tensor:
    """A waveform [B, length] whose STFT magnitude approaches `magnitude` [B, F, T] (Griffin & Lim, 1984).

    Starts from zero phase, so the same magnitudes always give the same waveform.
    """
    window = torch.hann_window(n_fft, device=magnitude.device)
    phase = torch.ones_like(magnitude, dtype=torch.complex64)
    for _ in range(iterations):
        wave = torch.istft(magnitude * phase, n_fft, hop_length=hop, window=window, center=True, length=length)
        spectrum = torch.stft(wave, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
        phase = spectrum / spectrum.abs().clamp(min=1e-8)
    return torch.istft(magnitude * phase, n_fft, hop_length=hop, window=window, center=True, length=length)


def log_mel(wave: torch.Tensor, filters: torch.Tensor, *, n_fft: int, hop: int) -> torch.Tensor:
    """[B, N] -> [B, n_mels, frames]: log of mel-weighted STFT magnitudes, floored at LOG_FLOOR."""
    return torch.log(torch.clamp(filters @ magnitudes(wave, n_fft=n_fft, hop=hop), min=LOG_FLOOR))


def mel_to_magnitude(logmel: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """[B, n_mels, T] -> non-negative STFT magnitudes [B, F, T]: the least-squares inverse of the filters."""
    mel = torch.exp(logmel) - LOG_FLOOR * (logmel <= math.log(LOG_FLOOR) + 1e-3)
    return torch.clamp(torch.linalg.pinv(filters) @ mel.clamp(min=0.0), min=0.0)
