"""A small VQ autoencoder over log-mel frames: a 1-D conv encoder, a cosine-similarity codebook, a conv decoder."""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from .mel import log_mel, mel_filters

# Log-mels lie between log(LOG_FLOOR) ~ -9.2 (silence) and ~4 (a loud tone); the network sees them scaled.
SHIFT, SCALE = 3.0, 4.0


@attrs.frozen(kw_only=True)
class Architecture:
    sample_rate: int = 8000
    clip_samples: int = 8192
    n_fft: int = 256
    hop: int = 128
    n_mels: int = 32
    channels: int = 64
    downsampling: Literal[1, 2, 4] = 2
    code_dim: int = 4
    codebook_size: int = 128

    @property
    def frames(self) -> int:
        """Log-mel frames of a clip (the centred STFT's last frame is dropped, so tokens divide them)."""
        return self.clip_samples // self.hop

    @property
    def tokens(self) -> int:
        return self.frames // self.downsampling

    def __attrs_post_init__(self) -> None:
        if self.clip_samples % (self.hop * self.downsampling):
            raise ValueError(f"clip_samples {self.clip_samples} is not a multiple of hop x downsampling")


PRESETS = {
    # For tests: 32 tokens of 16 codes, trains in seconds.
    "tiny": Architecture(n_mels=16, channels=16, codebook_size=16),
    # The Sounds recipes: 32 tokens (32 ms each) of 128 codes.
    "sounds": Architecture(),
}


def _stack(channels: list[int], *, up: int, down: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(channels, channels[1:])):
        if i == 1 and down > 1:
            layers.append(nn.Conv1d(a, b, 2 * down, stride=down, padding=down // 2))
        elif i == 1 and up > 1:
            layers.append(nn.ConvTranspose1d(a, b, 2 * up, stride=up, padding=up // 2))
        else:
            layers.append(nn.Conv1d(a, b, 3, padding=1))
        if i < len(channels) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class AudioVQ(nn.Module):
    """Waveform [B, N] -> log-mel [B, n_mels, T] -> codes [B, T / downsampling] -> log-mel."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        a = self.architecture = architecture
        self.register_buffer("filters", mel_filters(n_mels=a.n_mels, n_fft=a.n_fft, sample_rate=a.sample_rate), persistent=False)
        self.encoder = _stack([a.n_mels, a.channels, a.channels, a.channels, a.code_dim], up=1, down=a.downsampling)
        self.codebook = nn.Embedding(a.codebook_size, a.code_dim)
        self.decoder = _stack([a.code_dim, a.channels, a.channels, a.channels, a.n_mels], up=a.downsampling, down=1)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """The scaled log-mel [B, n_mels, frames] the network reconstructs."""
        a = self.architecture
        return (log_mel(wave, self.filters, n_fft=a.n_fft, hop=a.hop)[..., : a.frames] + SHIFT) / SCALE

    def entries(self) -> torch.Tensor:
        return F.normalize(self.codebook.weight, dim=-1)

    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, D, T] latents -> (codes [B, T], unit code vectors [B, D, T]) by cosine similarity."""
        unit = F.normalize(latent, dim=1)
        codes = torch.einsum("bdt,kd->btk", unit, self.entries()).argmax(dim=-1)
        return codes, self.entries()[codes].transpose(1, 2)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encoder(self.features(wave)))[0]

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T'] -> log-mel [B, n_mels, frames] (unscaled)."""
        return self.decoder(self.entries()[codes].transpose(1, 2)) * SCALE - SHIFT

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        target = self.features(wave)
        latent = F.normalize(self.encoder(target), dim=1)
        codes, quantized = self.quantize(latent)
        # Straight-through: the decoder's gradient reaches the encoder as if no lookup happened (VQ-VAE, sec. 3.1).
        rebuilt = self.decoder(latent + (quantized - latent).detach())
        return {
            "reconstruction": F.mse_loss(rebuilt, target),
            "codebook": F.mse_loss(quantized, latent.detach()),
            "commitment": F.mse_loss(latent, quantized.detach()),
            "codes": codes,
        }
