"""MAGVLT: one bidirectional transformer over the joint token space (Kim et al., CVPR 2023).

Built from a JointTokenSpace alone, so a third modality needs no change here:
every modality's content ids and every special token share one embedding table;
each position table (specials, then one per modality) is a row range of one
position embedding; a variable-length modality gets a target-length head.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmgen.api import JointTokenSpace, Packed

from . import presets
from .code_init import add_code_vectors, tokenizer_code_vectors
from .presets import Architecture
from .transformer_block import TransformerBlock

# A layout has 4 special slots ([BOC] [BEGIN_a] .. [BOG] [BEGIN_b]); the authors
# size the specials position table as sum(modality lengths) + 4 (see presets.py).
LAYOUT_SPECIAL_SLOTS = 4


class MagvltModel(nn.Module):
    name: ClassVar[str] = "magvlt"
    default_sampler: ClassVar[str] = "maskgit"  # iterative parallel refinement (sec. 3.3)

    @attrs.frozen(kw_only=True)
    class Config:
        preset: Literal["tiny", "shapes", "base", "large"]  # named in every recipe: sizes are an experiment choice
        width: int | None = None  # None: the preset's value
        depth: int | None = None
        heads: int | None = None
        dropout: float | None = None
        embedding_dropout: float | None = None
        special_positions: int | None = None  # None: sum of modality lengths + 4, as the authors
        # Start code embeddings from the tokenizer's code vectors (code_init.py); 0: the paper's random init.
        code_init_scale: float = 0.0

        def __attrs_post_init__(self) -> None:
            if self.code_init_scale < 0:
                raise ValueError(f"code_init_scale must be >= 0, got {self.code_init_scale}")

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        token_space: JointTokenSpace,
        tokenizers: Mapping[str, Any] | Iterable[Any] | None = None,
        **_deps: Any,
    ) -> MagvltModel:
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
        special_positions: int | None = None,
    ) -> None:
        super().__init__()
        self.token_space = token_space
        self.architecture = architecture
        width = architecture.width
        lengths = [space.length for space in token_space.spaces]
        if special_positions is None:
            special_positions = sum(lengths) + LAYOUT_SPECIAL_SLOTS
        # Packed.table indexes these: the specials (SPECIALS_TABLE == 0), then modality i at i + 1.
        table_sizes = [special_positions, *lengths]
        table_starts = [sum(table_sizes[:i]) for i in range(len(table_sizes))]
        self.register_buffer("table_sizes", torch.tensor(table_sizes), persistent=False)
        self.register_buffer("table_starts", torch.tensor(table_starts), persistent=False)

        self.embedding = nn.Embedding(token_space.vocab_size, width)
        self.positions = nn.Embedding(sum(table_sizes), width)
        self.embedding_dropout = nn.Dropout(architecture.embedding_dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                width=width, heads=architecture.heads, dropout=architecture.dropout, mlp_ratio=architecture.mlp_ratio
            )
            for _ in range(architecture.depth)
        )
        # Output head (sec. 3.1): Linear -> GELU -> LayerNorm -> tied embedding + bias.
        self.head_dense = nn.Linear(width, width)
        self.head_norm = nn.LayerNorm(width)
        self.output_bias = nn.Parameter(torch.zeros(token_space.content_size))
        # L_TL: class k of the head on a variable-length segment's BEGIN state means length k + 1.
        self.length_heads = nn.ModuleDict(
            {s.name: nn.Linear(width, s.length, bias=False) for s in token_space.spaces if s.variable_length}
        )
        self.activation_checkpointing = False
        self.apply(_init_weights)

    def forward(self, packed: Packed) -> torch.Tensor:
        """Hidden states [B, S, D] of a packed sequence."""
        # Checked eagerly only: the check syncs with the device and would break a compiled graph.
        if not torch.compiler.is_compiling() and bool((packed.position >= self.table_sizes[packed.table]).any()):
            raise ValueError(
                f"a position exceeds its table (sizes {self.table_sizes.tolist()}): "
                f"tables {packed.table.tolist()}, positions {packed.position.tolist()}"
            )
        rows = self.table_starts[packed.table] + packed.position
        x = self.embedding(packed.tokens) + self.positions(rows)
        x = self.embedding_dropout(x)
        # SDPA broadcasts one mask over the heads; None keeps its fastest kernel.
        mask = None if packed.attn_mask is None else packed.attn_mask[:, None]
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x

    def logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        """[..., vocab_size of `modality`]: scores over that modality's content ids only."""
        start, stop = self.token_space.content_range(modality)
        h = self.head_norm(F.gelu(self.head_dense(hidden)))
        return F.linear(h, self.embedding.weight[start:stop], self.output_bias[start:stop])

    def length_logits(self, hidden: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """[..., max_length] from BEGIN states; `modality` may be omitted when only one has variable length."""
        if modality is None:
            if len(self.length_heads) != 1:
                raise ValueError(f"say which modality's length to predict: {list(self.length_heads)}")
            modality = next(iter(self.length_heads))
        if modality not in self.length_heads:
            raise KeyError(f"modality {modality!r} has no length head (variable-length: {list(self.length_heads)})")
        return self.length_heads[modality](hidden)

    def init_code_embeddings(self, modality: str, vectors: torch.Tensor, *, scale: float) -> None:
        """Add a projection of `modality`'s tokenizer code vectors [K, D] to its (tied) code embeddings."""
        start, stop = self.token_space.content_range(modality)
        add_code_vectors(self.embedding.weight[start:stop], vectors, scale=scale, where=f"magvlt {modality} codes")

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block in backward instead of storing its activations."""
        self.activation_checkpointing = enabled

    def fsdp_units(self) -> list[nn.Module]:
        """The modules to shard one by one (FSDP2 `fully_shard`): the blocks."""
        return list(self.blocks)


def _init_weights(module: nn.Module) -> None:
    # Every weight N(0, 0.02), biases zero, LayerNorms identity (sec. 4).
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
