"""VQ-GAN encoder: pixels in [-1, 1] -> a z_channels feature map at 1/2**(levels-1) of the resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AttentionBlock, Downsample, ResidualBlock, group_norm


class Middle(nn.Module):
    """Residual block, self-attention, residual block: the bottleneck of encoder and decoder."""

    def __init__(self, *, channels: int, norm_groups: int, dropout: float, attention: bool = True) -> None:
        super().__init__()
        self.block1 = ResidualBlock(in_channels=channels, out_channels=channels, norm_groups=norm_groups, dropout=dropout)
        self.attention = AttentionBlock(channels=channels, norm_groups=norm_groups) if attention else nn.Identity()
        self.block2 = ResidualBlock(in_channels=channels, out_channels=channels, norm_groups=norm_groups, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.attention(self.block1(x)))


class Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention when the level has it."""

    def __init__(
        self, *, in_channels: int, out_channels: int, blocks: int, attention: bool, norm_groups: int, dropout: float
    ) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * blocks
        self.blocks = nn.ModuleList(
            ResidualBlock(in_channels=a, out_channels=b, norm_groups=norm_groups, dropout=dropout)
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.attentions = nn.ModuleList(
            AttentionBlock(channels=out_channels, norm_groups=norm_groups) for _ in range(blocks if attention else 0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if self.attentions:
                x = self.attentions[index](x)
        return x


class Encoder(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        resolution: int,
        z_channels: int,
        patch_size: int = 1,
        middle_attention: bool = True,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.stem = nn.Conv2d(in_channels * patch_size**2, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        current = resolution // patch_size
        for index in range(len(ch_mult)):
            self.levels.append(
                Level(
                    in_channels=widths[index],
                    out_channels=widths[index + 1],
                    blocks=num_res_blocks,
                    attention=current in attn_resolutions,
                    norm_groups=norm_groups,
                    dropout=dropout,
                )
            )
            if index < len(ch_mult) - 1:
                self.downsamples.append(Downsample(channels=widths[index + 1]))
                current //= 2
        self.middle = Middle(channels=widths[-1], norm_groups=norm_groups, dropout=dropout, attention=middle_attention)
        self.out_norm = group_norm(widths[-1], norm_groups)
        self.out_conv = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_size > 1:
            # Full-resolution convs with few channels are slow on CPU; folding pixel
            # blocks into channels keeps every conv at a width the hardware likes.
            x = F.pixel_unshuffle(x, self.patch_size)
        h = self.stem(x)
        for index, level in enumerate(self.levels):
            h = level(h)
            if index < len(self.downsamples):
                h = self.downsamples[index](h)
        h = self.middle(h)
        return self.out_conv(F.silu(self.out_norm(h)))
