"""Named sizes of the MAGVLT transformer.

`base` and `large` are the paper's (sec. 4, "Model"); `tiny` keeps tests fast;
`shapes` is sized for the CPU quickstart (~64 image + ~16 text tokens on 2 cores).

Parameter count of `base` (checked by tests/test_magvlt_model.py on the meta
device), with d = 1024, 24 blocks, the paper's two modalities (image: 256 tokens
of 16,384 codes; text: 64 tokens of 49,408) and MixSel's markers:

    token embedding   (16,384 + 49,408 + 10 specials) * d        67,381,248
    positions         (256 + 64 + (256 + 64 + 4) special slots) * d  659,456
    24 blocks         24 * (12 d^2 + 13 d)                      302,309,376
    output head       d^2 + d (dense) + 2 d (norm) + 65,792 (bias)  1,117,440
    length head       d * 64 (no bias)                               65,536
    total                                                       371,533,056  (~371.5M)

Three choices make the count land on the paper's 371.5M; each follows the
authors' released model (kakaobrain/magvlt, stage2): the special-token position
table has room for `sum(modality lengths) + 4` slots, although a layout's special
tokens use 4 and MASK tokens (mask_positions: special) the first max(lengths);
there is no final LayerNorm after the blocks (the output head has its own); the
length head has no bias. The output bias covers content ids only, since logits
are always restricted to one modality's vocabulary. `large` gives 795.2M this
way (the paper quotes 840M for it, apparently on another basis).
"""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Architecture:
    """The sizes a MagvltModel is built with."""

    width: int
    depth: int
    heads: int
    dropout: float = 0.0  # residual branches and attention probabilities
    embedding_dropout: float = 0.0
    mlp_ratio: int = 4

    def __attrs_post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if min(self.width, self.depth, self.heads, self.mlp_ratio) < 1:
            raise ValueError(f"width, depth, heads and mlp_ratio must be >= 1, got {self}")
        for name in ("dropout", "embedding_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


PRESETS: dict[str, Architecture] = {
    "tiny": Architecture(width=32, depth=2, heads=2),
    # Underfitting regime (a few hundred CPU steps): no dropout; head width 64
    # keeps the attention matmuls efficient on CPU.
    "shapes": Architecture(width=256, depth=4, heads=4),
    # Paper: dropout 0.1 on residuals and attention, none on embeddings.
    "base": Architecture(width=1024, depth=24, heads=8, dropout=0.1),
    "large": Architecture(width=1280, depth=36, heads=10, dropout=0.1),
}


def architecture(
    preset: str,
    *,
    width: int | None = None,
    depth: int | None = None,
    heads: int | None = None,
    dropout: float | None = None,
    embedding_dropout: float | None = None,
) -> Architecture:
    """A preset with any of its sizes overridden (None keeps the preset's value)."""
    if preset not in PRESETS:
        raise KeyError(f"no MAGVLT preset {preset!r} (presets: {', '.join(PRESETS)})")
    overrides = dict(width=width, depth=depth, heads=heads, dropout=dropout, embedding_dropout=embedding_dropout)
    return attrs.evolve(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
