"""What MAGVLT and its autoregressive twin ARGVLT share: embeddings, position tables, output head.

Built from a JointTokenSpace alone, so a third modality needs no change here:
every modality's content ids and every special token share one embedding table;
each position table (specials, then one per modality) is a row range of one
position embedding. The attribute names are the keys of saved weights, and the
modules are made in one order (so a seed gives the same initial weights): keep both.

A MASK token's position: with `mask_positions="special"` (the authors' code) a
masked slot at position p of its modality adds row p of the specials table to its
modality's row p; with "modality" it gets its modality's row only (what models
saved before the option existed were trained with: see saved.py).

`max_segments` > 0 adds a segment-index embedding (`segments`, one row per
Part of the sequence: `Packed.segment`), so that in a sequence of several
image-text pairs pair 0's image and pair 3's differ by more than their
neighbours. 0 (the default) adds no parameter: models saved without it load and
compute exactly as before. The table starts at zero, so a pretrained model that
gets one (fine-tuning for in-context pairs) computes what it did until trained.
Several pairs need no larger specials table: each BEGIN takes the next special
slot, and the table has sum(modality lengths) + 4 slots, far more than a few
pairs' specials (5 pairs: 12); those rows are shared with MASK positions
(mask_positions: special), as slots 0-3 already are in the authors' layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmgen.api import SPECIALS_TABLE, JointTokenSpace, UserError

from . import presets
from .code_init import add_code_vectors, tokenizer_code_vectors
from .presets import Architecture

# A layout has 4 special slots ([BOC] [BEGIN_a] .. [BOG] [BEGIN_b]); the authors
# size the specials position table as sum(modality lengths) + 4 (see presets.py).
LAYOUT_SPECIAL_SLOTS = 4

MaskPositions = Literal["special", "modality"]
MASK_POSITIONS: tuple[str, ...] = ("special", "modality")


class TokenTransformer(nn.Module):
    """A transformer over the joint token space; subclasses choose the block (its attention) and add heads."""

    name: ClassVar[str]

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        token_space: JointTokenSpace,
        tokenizers: Mapping[str, Any] | Iterable[Any] | None = None,
        **_deps: Any,
    ) -> TokenTransformer:
        """The model for `config`; with `tokenizers` (training from scratch) code embeddings start from their code vectors.

        A saved model is rebuilt without tokenizers and then loads its weights.
        """
        sizes = presets.architecture(
            config.preset,
            width=config.width,
            depth=config.depth,
            heads=config.heads,
            dropout=config.dropout,
            embedding_dropout=config.embedding_dropout,
        )
        model = cls(
            token_space=token_space,
            architecture=sizes,
            special_positions=config.special_positions,
            mask_positions=config.mask_positions,
            **({"max_segments": config.max_segments} if getattr(config, "max_segments", 0) else {}),
            **_condition_attention(config),
        )
        if config.code_init_scale > 0:
            for modality, vectors in tokenizer_code_vectors(tokenizers).items():
                model.init_code_embeddings(modality, vectors, scale=config.code_init_scale)
        return model

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        architecture: Architecture,
        special_positions: int | None,
        mask_positions: MaskPositions,
        block: type[nn.Module],
        max_segments: int = 0,
    ) -> None:
        super().__init__()
        self.token_space = token_space
        self.architecture = architecture
        width = architecture.width
        lengths = [space.length for space in token_space.spaces]
        if special_positions is None:
            special_positions = sum(lengths) + LAYOUT_SPECIAL_SLOTS
        check_mask_positions(mask_positions, special_positions, token_space)
        self.mask_positions = mask_positions
        # Packed.table indexes these: the specials (SPECIALS_TABLE == 0), then modality i at i + 1.
        table_sizes = [special_positions, *lengths]
        table_starts = [sum(table_sizes[:i]) for i in range(len(table_sizes))]
        self.register_buffer("table_sizes", torch.tensor(table_sizes), persistent=False)
        self.register_buffer("table_starts", torch.tensor(table_starts), persistent=False)
        mask_ids = [token_space.mask_id(space.name) for space in token_space.spaces]
        self.register_buffer("mask_ids", torch.tensor(mask_ids), persistent=False)

        self.embedding = nn.Embedding(token_space.vocab_size, width)
        self.positions = nn.Embedding(sum(table_sizes), width)
        self.embedding_dropout = nn.Dropout(architecture.embedding_dropout)
        self.blocks = nn.ModuleList(
            block(width=width, heads=architecture.heads, dropout=architecture.dropout, mlp_ratio=architecture.mlp_ratio)
            for _ in range(architecture.depth)
        )
        # Output head (sec. 3.1): Linear -> GELU -> LayerNorm -> tied embedding + bias.
        self.head_dense = nn.Linear(width, width)
        self.head_norm = nn.LayerNorm(width)
        self.output_bias = nn.Parameter(torch.zeros(token_space.content_size))
        self.activation_checkpointing = False
        if max_segments < 0:
            raise UserError(f"model: max_segments must be >= 0, got {max_segments}")
        self.max_segments = max_segments
        # Made last and only when asked for, so models without it keep their parameter names and seeded init.
        self.segments = nn.Embedding(max_segments, width) if max_segments else None

    def zero_segments(self) -> None:
        """Start the segment-index table at zero: the model computes what it did without it."""
        if self.segments is not None:
            nn.init.zeros_(self.segments.weight)

    def embed(
        self,
        tokens: torch.Tensor,
        table: torch.Tensor,
        position: torch.Tensor,
        segment: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token plus position embeddings [B, S, D] of joint ids, each slot's position table and position in it.

        `segment` [S] (Packed.segment) adds the segment-index embedding when the model has one.
        """
        # Checked eagerly only: the check syncs with the device and would break a compiled graph.
        if not torch.compiler.is_compiling() and bool((position >= self.table_sizes[table]).any()):
            raise ValueError(
                f"a position exceeds its table (sizes {self.table_sizes.tolist()}): "
                f"tables {table.tolist()}, positions {position.tolist()}"
            )
        x = self.embedding(tokens) + self.positions(self.table_starts[table] + position)
        if self.mask_positions == "special":
            # Every MASK, wherever it comes from (pack's Part.mask, condition dropout, a sampler's
            # unknown slots), also gets the specials row of its position in its modality.
            masked = torch.isin(tokens, self.mask_ids) & (table != SPECIALS_TABLE)
            special = self.positions(self.table_starts[SPECIALS_TABLE] + position)
            x = torch.where(masked[..., None], x + special, x)  # other slots keep their exact values
        if self.segments is not None and segment is not None:
            if not torch.compiler.is_compiling() and int(segment.max()) >= self.max_segments:
                raise ValueError(
                    f"a sequence of {int(segment.max()) + 1} segments exceeds the model's max_segments"
                    f" {self.max_segments}"
                )
            x = x + self.segments(segment)
        return self.embedding_dropout(x)

    def logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        """[..., vocab_size of `modality`]: scores over that modality's content ids only."""
        start, stop = self.token_space.content_range(modality)
        h = self.head_norm(F.gelu(self.head_dense(hidden)))
        return F.linear(h, self.embedding.weight[start:stop], self.output_bias[start:stop])

    def init_code_embeddings(self, modality: str, vectors: torch.Tensor, *, scale: float) -> None:
        """Add a projection of `modality`'s tokenizer code vectors [K, D] to its (tied) code embeddings."""
        start, stop = self.token_space.content_range(modality)
        add_code_vectors(self.embedding.weight[start:stop], vectors, scale=scale, where=f"{self.name} {modality} codes")

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block in backward instead of storing its activations."""
        self.activation_checkpointing = enabled

    def fsdp_units(self) -> list[nn.Module]:
        """The modules to shard one by one (FSDP2 `fully_shard`): the blocks."""
        return list(self.blocks)


def _condition_attention(config: Any) -> dict[str, str]:
    """MAGVLT's `condition_attention` keyword when not the paper's "full" (ARGVLT's config refuses other values)."""
    attention = getattr(config, "condition_attention", "full")
    return {} if attention == "full" else {"condition_attention": attention}


def check_mask_positions(mask_positions: str, special_positions: int, token_space: JointTokenSpace) -> None:
    """Refuse an unknown choice, or a specials table too short for a MASK at every modality position."""
    if mask_positions not in MASK_POSITIONS:
        raise UserError(f"model: mask_positions must be one of {', '.join(MASK_POSITIONS)}, got {mask_positions!r}")
    longest = max(token_space.spaces, key=lambda space: space.length)
    if mask_positions == "special" and special_positions < longest.length:
        raise UserError(
            f"model: special_positions {special_positions} is too small for mask_positions: special, where a MASK"
            f" at position p of its modality also takes special position p ({longest.name!r} has {longest.length}"
            f" positions): set special_positions >= {longest.length}, leave it unset (sum of modality lengths"
            " + 4, as the authors) or set mask_positions: modality"
        )


def init_weights(module: nn.Module) -> None:
    # Every weight N(0, 0.02), biases zero, LayerNorms identity (sec. 4).
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
