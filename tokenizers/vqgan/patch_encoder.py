"""An encoder whose every token sees only its own pixel patch.

taming's convolutional encoder gives each token a receptive field over much of
the image, with GroupNorm statistics over the whole of it. On images with large
flat regions that makes codes depend on context: in a measured Shapes run, a
plain white 64x64 canvas came out as 54 different codes on its 64 positions,
and the token sequences MAGVLT had to learn carried ~9.9 bits per token. Here
the image is cut into `downsampling` x `downsampling` patches and each patch is
mapped to its latent by the same MLP (1x1 convolutions, per-position LayerNorm),
so equal patches always get equal codes. The decoder keeps its full context, so
reconstructions still join neighbouring tokens smoothly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each position of a [B, C, H, W] map (local, unlike GroupNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchBlock(nn.Module):
    """x + W2 swish(W1 norm(x)), every weight a 1x1 convolution; starts as the identity."""

    def __init__(self, channels: int, *, expansion: int = 2) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.inner = nn.Conv2d(channels, expansion * channels, 1)
        self.outer = nn.Conv2d(expansion * channels, channels, 1)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(F.silu(self.inner(self.norm(x))))


class PatchEncoder(nn.Module):
    """Pixels [B, C, H, W] -> latents [B, z, H / p, W / p], each from its own p x p patch only."""

    def __init__(self, *, in_channels: int, patch: int, width: int, blocks: int, z_channels: int) -> None:
        super().__init__()
        self.patch = patch
        self.stem = nn.Conv2d(in_channels * patch * patch, width, 1)
        self.blocks = nn.Sequential(*(PatchBlock(width) for _ in range(blocks)))
        self.out_norm = ChannelNorm(width)
        self.out_conv = nn.Conv2d(width, z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(F.pixel_unshuffle(x, self.patch)))
        return self.out_conv(F.silu(self.out_norm(h)))
