"""VQ-GAN decoder: a z_channels feature map -> pixels in [-1, 1] (unclamped), mirroring the encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Upsample, group_norm
from .encoder import Level, Middle


class Decoder(nn.Module):
    """Levels run from the coarsest resolution to the finest; each has one block more than the encoder's."""

    def __init__(
        self,
        *,
        out_channels: int,
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
        widths = [ch * m for m in reversed(ch_mult)]
        self.stem = nn.Conv2d(z_channels, widths[0], 3, padding=1)
        self.middle = Middle(channels=widths[0], norm_groups=norm_groups, dropout=dropout, attention=middle_attention)
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        current = resolution // (patch_size * 2 ** (len(ch_mult) - 1))
        previous = widths[0]
        for index, width in enumerate(widths):
            self.levels.append(
                Level(
                    in_channels=previous,
                    out_channels=width,
                    blocks=num_res_blocks + 1,
                    attention=current in attn_resolutions,
                    norm_groups=norm_groups,
                    dropout=dropout,
                )
            )
            previous = width
            if index < len(widths) - 1:
                self.upsamples.append(Upsample(channels=width))
                current *= 2
        self.out_norm = group_norm(widths[-1], norm_groups)
        self.out_conv = nn.Conv2d(widths[-1], out_channels * patch_size**2, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.middle(self.stem(z))
        for index, level in enumerate(self.levels):
            h = level(h)
            if index < len(self.upsamples):
                h = self.upsamples[index](h)
        h = self.out_conv(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(h, self.patch_size) if self.patch_size > 1 else h

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight balances gradients at (Esser et al. 2021, eq. 7)."""
        return self.out_conv.weight
