"""The VQ-GAN autoencoder: encoder -> 1x1 projection -> quantizer -> 1x1 projection -> decoder."""

from __future__ import annotations

import torch
from torch import nn

from .architecture import ArchitectureConfig
from .decoder import Decoder
from .encoder import Encoder
from .patch_encoder import PatchEncoder
from .quantizer import Quantized, Restart, VectorQuantizer


def pixels_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] in 0..255 -> float in [-1, 1] (taming's input range)."""
    return images.float() / 127.5 - 1.0


def unit_to_pixels(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8, rounded and clamped."""
    return ((x.detach().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class VQAutoencoder(nn.Module):
    def __init__(self, architecture: ArchitectureConfig) -> None:
        super().__init__()
        a = self.architecture = architecture
        shape = dict(
            ch=a.ch,
            ch_mult=a.ch_mult,
            num_res_blocks=a.num_res_blocks,
            attn_resolutions=a.attn_resolutions,
            resolution=a.resolution,
            z_channels=a.z_channels,
            patch_size=a.patch_size,
            middle_attention=a.middle_attention,
            norm_groups=a.norm_groups,
            dropout=a.dropout,
        )
        if a.encoder == "patch":
            self.encoder = PatchEncoder(
                in_channels=a.in_channels,
                patch=a.downsampling,
                width=a.ch * a.ch_mult[-1] * 2,
                blocks=a.num_res_blocks * len(a.ch_mult),
                z_channels=a.z_channels,
            )
        else:
            self.encoder = Encoder(in_channels=a.in_channels, **shape)
        self.to_code = nn.Conv2d(a.z_channels, a.codebook_dim, 1)
        self.quantizer = VectorQuantizer(codebook_size=a.codebook_size, dim=a.codebook_dim, l2_normalize=a.l2_normalize)
        self.from_code = nn.Conv2d(a.codebook_dim, a.z_channels, 1)
        self.decoder = Decoder(out_channels=a.in_channels, **shape)

    def encode(self, x: torch.Tensor, *, restart: Restart | None = None) -> Quantized:
        """Pixels in [-1, 1] [B, C, H, W] -> quantized latents and codes [B, h, w]."""
        return self.quantizer(self.to_code(self.encoder(x)), restart=restart)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Code vectors [B, D, h, w] -> pixels in [-1, 1] (unclamped)."""
        return self.decoder(self.from_code(quantized))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.embed(codes))

    def forward(self, x: torch.Tensor, *, restart: Restart | None = None) -> tuple[torch.Tensor, Quantized]:
        q = self.encode(x, restart=restart)
        return self.decode(q.quantized), q
