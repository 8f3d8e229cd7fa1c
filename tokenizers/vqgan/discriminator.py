"""PatchGAN discriminator (Isola et al. 2017, pix2pix; as used by Esser et al. 2021): one logit per image patch."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import group_norm


class PatchDiscriminator(nn.Module):
    """`layers` stride-2 4x4 convs (widths ndf * 2**k, capped at 8 ndf), a stride-1 conv, a 1-channel head.

    GroupNorm in place of pix2pix's BatchNorm, so a patch's logit never depends on
    the other images in the batch (real and fake are scored in separate calls).
    """

    def __init__(self, *, in_channels: int = 3, channels: int = 64, layers: int = 3, norm_groups: int = 32) -> None:
        super().__init__()
        stack: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for index in range(1, layers + 1):
            out = channels * min(2**index, 8)
            stride = 2 if index < layers else 1
            stack += [nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False), group_norm(out, norm_groups), nn.LeakyReLU(0.2)]
            width = out
        stack.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*stack)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
