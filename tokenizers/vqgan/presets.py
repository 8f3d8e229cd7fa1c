"""Named VQ-GAN architectures.

- `tiny`: for tests; 16x16 pixels -> 4x4 tokens, trains in seconds.
- `shapes`: the quickstart on the Shapes set: 64x64 pixels -> 8x8 = 64 tokens
  (downsampling 8), 512 l2-normalised 4-dim codes. The encoder is the `patch`
  one (patch_encoder.py): each token's code depends on its own 8x8 pixel patch
  only, so the white canvas is one code and a scene's tokens are what a
  generative model can learn (taming's encoder gave every position of a white
  canvas its own code). The decoder is taming's, narrow, with a 4x4
  pixel-shuffle stem and no middle attention (a fifth of a CPU step at this
  size). Chosen by measurement (oracle accuracy on reconstructions after a fixed
  number of updates): a 4-dim lookup beat 8 and 16 dims; batch 8 beat batch 32
  at equal time. Quality against training time: benchmarks/vqgan_shapes_quality.py,
  results in docs/results/tokenizer.md.
- `f16_16384`: the paper's tokenizer, taming-transformers `vqgan_imagenet_f16_16384`:
  256x256 pixels -> 16x16 tokens, 16,384 codes of dimension 256, z 256,
  ch 128, ch_mult [1, 1, 2, 2, 4], 2 residual blocks, attention at 16x16.
"""

from __future__ import annotations

from .architecture import ArchitectureConfig

PRESETS: dict[str, ArchitectureConfig] = {
    "tiny": ArchitectureConfig(
        resolution=16,
        ch=8,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        z_channels=8,
        norm_groups=4,
        codebook_size=32,
        codebook_dim=4,
        l2_normalize=True,
    ),
    "shapes": ArchitectureConfig(
        resolution=64,
        patch_size=4,
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        middle_attention=False,
        encoder="patch",
        z_channels=64,
        norm_groups=32,
        codebook_size=512,
        codebook_dim=4,
        l2_normalize=True,
    ),
    "f16_16384": ArchitectureConfig(
        resolution=256,
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16,),
        z_channels=256,
        norm_groups=32,
        codebook_size=16384,
        codebook_dim=256,
        l2_normalize=False,
    ),
}
