"""The VQ-GAN autoencoder's shape: one frozen config for encoder, quantizer and decoder."""

from __future__ import annotations

from typing import Literal

import attrs


@attrs.frozen(kw_only=True)
class ArchitectureConfig:
    """Sizes of a taming-style VQ-GAN.

    The encoder first folds `patch_size` x `patch_size` pixel blocks into channels
    (pixel-unshuffle; 1 = off, as in taming), then halves the resolution after
    every level but the last, so `resolution / (patch_size * 2**(len(ch_mult) - 1))`
    is the token grid side; the decoder mirrors it. Self-attention runs at every
    level whose resolution is in `attn_resolutions`, and in the middle block
    unless `middle_attention` is off (taming always has it; on CPU at small sizes
    it costs a fifth of a training step). `codebook_dim` may be smaller than
    `z_channels`: a 1x1 conv projects into the lookup space (a low-dimensional,
    l2-normalised lookup keeps codes alive; Yu et al. 2022, ViT-VQGAN sec. 3.2).
    """

    resolution: int = 64
    in_channels: int = 3
    patch_size: int = 1
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    middle_attention: bool = True
    # "patch": each token's code depends on its own pixel patch only (patch_encoder.py);
    # "conv": taming's encoder, whose tokens see much of the image.
    encoder: Literal["conv", "patch"] = "conv"
    z_channels: int = 64
    dropout: float = 0.0
    norm_groups: int = 32
    codebook_size: int = 512
    codebook_dim: int = 16
    l2_normalize: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.ch_mult:
            raise ValueError("ch_mult needs at least one level")
        factor = self.downsampling
        if self.resolution % factor:
            raise ValueError(f"resolution {self.resolution} is not divisible by the downsampling factor {factor}")
        for width in (self.ch * m for m in self.ch_mult):
            if width % min(self.norm_groups, width):
                raise ValueError(f"channel count {width} is not divisible by norm_groups={self.norm_groups}")

    @property
    def downsampling(self) -> int:
        return self.patch_size * 2 ** (len(self.ch_mult) - 1)

    @property
    def grid(self) -> int:
        """Side of the token grid."""
        return self.resolution // self.downsampling

    def level_resolutions(self) -> tuple[int, ...]:
        """The feature-map side at each encoder level, finest first."""
        return tuple(self.resolution // (self.patch_size * 2**i) for i in range(len(self.ch_mult)))

    def with_resolution(self, resolution: int) -> ArchitectureConfig:
        """The same network (same layers, same weights) at another pixel size: only the token grid changes.

        Attention stays at the same levels, so `attn_resolutions` scales with the resolution.
        """
        if resolution <= 0 or resolution % self.downsampling:
            raise ValueError(
                f"resolution {resolution} is not a positive multiple of the downsampling factor {self.downsampling}"
            )
        attention_levels = [i for i, side in enumerate(self.level_resolutions()) if side in self.attn_resolutions]
        resized = attrs.evolve(self, resolution=resolution, attn_resolutions=())
        return attrs.evolve(resized, attn_resolutions=tuple(resized.level_resolutions()[i] for i in attention_levels))
