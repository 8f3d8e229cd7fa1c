"""Named VQ-GAN architectures.

- `tiny`: for tests; 16x16 pixels -> 4x4 tokens, trains in seconds.
- `shapes`: the quickstart on the Shapes set: 64x64 pixels -> 8x8 = 64 tokens
  (downsampling 8: a 4x4 pixel-unshuffle stem, then one stride-2 level), 1024
  l2-normalised 4-dim codes, narrow channels, no middle attention (it costs a
  fifth of a CPU step at this size). Short image sequences keep the MAGVLT
  transformer fast on CPU. Chosen by measurement (oracle accuracy after a fixed
  number of updates): a 4-dim lookup beat 8 and 16 dims, 1024 codes beat 512
  and 2048, and taming's 32 norm groups (one channel each at this width) did at
  least as well as 1, 4 or 8 groups; batch 8 beat batch 32 at equal time. With
  TrainConfig's 2,000 updates: 99.3% of val objects read exactly by the oracle
  in 183 s on 2 cores (benchmarks/vqgan_shapes_quality.py, results in
  benchmarks/results/).
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
        z_channels=64,
        norm_groups=32,
        codebook_size=1024,
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
