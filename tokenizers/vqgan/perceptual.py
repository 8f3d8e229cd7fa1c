"""LPIPS perceptual distance (Zhang et al. 2018) with VGG-16 features, weights read from a local file.

The file is either an LPIPS state dict in taming-transformers' layout
(`net.slice1.0.weight` ... `lin4.model.1.weight`) or a whole taming VQ-GAN
checkpoint, whose `loss.perceptual_loss.*` entries hold exactly that. There is no
download: without a file the perceptual term is off.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .lightning_checkpoint import read_lightning_checkpoint

# VGG-16 `features` up to relu5_3, by torchvision index: ("conv", in, out) or ("pool",).
VGG16_SLICES = (
    {0: (3, 64), 2: (64, 64)},
    {5: (64, 128), 7: (128, 128)},
    {10: (128, 256), 12: (256, 256), 14: (256, 256)},
    {17: (256, 512), 19: (512, 512), 21: (512, 512)},
    {24: (512, 512), 26: (512, 512), 28: (512, 512)},
)
TAMING_PREFIX = "loss.perceptual_loss."
# LPIPS feeds VGG ImageNet-normalised inputs from [-1, 1] pixels.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def vgg_slice(convs: dict[int, tuple[int, int]]) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    first = min(convs)
    if first > 0:
        layers[str(first - 1)] = nn.MaxPool2d(2, 2)
    for index, (cin, cout) in convs.items():
        layers[str(index)] = nn.Conv2d(cin, cout, 3, padding=1)
        layers[str(index + 1)] = nn.ReLU()
    return nn.Sequential(layers)


class LinearHead(nn.Module):
    """LPIPS's per-channel weights on one feature level (kept under `model.1` as the released files have it)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(OrderedDict([("0", nn.Identity()), ("1", nn.Conv2d(channels, 1, 1, bias=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VGGFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for index, convs in enumerate(VGG16_SLICES, start=1):
            self.add_module(f"slice{index}", vgg_slice(convs))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index in range(1, len(VGG16_SLICES) + 1):
            x = getattr(self, f"slice{index}")(x)
            features.append(x)
        return features


class LPIPS(nn.Module):
    """Frozen: distances are [B] per image pair of pixels in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None], persistent=False)
        self.net = VGGFeatures()
        for index, convs in enumerate(VGG16_SLICES):
            self.add_module(f"lin{index}", LinearHead(list(convs.values())[-1][1]))
        self.requires_grad_(False).eval()

    @classmethod
    def from_file(cls, path: Path | str) -> LPIPS:
        state = read_lightning_checkpoint(path)  # a whole taming last.ckpt carries Lightning extras
        state = state.get("state_dict", state)
        if any(key.startswith(TAMING_PREFIX) for key in state):
            state = {key[len(TAMING_PREFIX) :]: value for key, value in state.items() if key.startswith(TAMING_PREFIX)}
        # taming stores the input scaling as buffers of its own; ours are constants.
        state = {key: value for key, value in state.items() if not key.startswith("scaling_layer.")}
        module = cls()
        module.load_state_dict(state, strict=True)
        return module

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # always frozen, whatever the enclosing module does

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.net((a - self.shift) / self.scale)
        fb = self.net((b - self.shift) / self.scale)
        total = torch.zeros(a.shape[0], device=a.device, dtype=a.dtype)
        for index, (xa, xb) in enumerate(zip(fa, fb)):
            diff = (F.normalize(xa, dim=1, eps=1e-10) - F.normalize(xb, dim=1, eps=1e-10)) ** 2
            total = total + getattr(self, f"lin{index}")(diff).mean(dim=(1, 2, 3))
        return total
