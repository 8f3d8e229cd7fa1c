"""ARGVLT: MAGVLT's autoregressive twin (Kim et al., CVPR 2023: the baseline of the abstract and sec. 4).

The authors released no ARGVLT code; this is our reconstruction (docs/method.md, "19. ARGVLT, the autoregressive twin").

The same joint token space, embeddings, position tables, presets and output
head as MAGVLT (so the twins have the same width, depth and heads); attention
is left to right, it is trained by next-token prediction on both orders (text
then image for T2I, image then text for I2T: the causal_lm objective) and
sampled token by token with a KV cache (the autoregressive sampler).

Three ways to run it:
- `model(packed)`: hidden states of a whole sequence, each slot seeing only
  itself and earlier slots (training and uncached sampling);
- `hidden, cache = model.prefill(packed)`: the same, also keeping every layer's
  keys and values in a KVCache;
- `model.extend(tokens, table, position, cache)`: hidden states of new slots
  after the cached ones; their keys and values are appended to `cache`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmgen.api import JointTokenSpace, Packed

from . import presets
from .causal import causal, causal_attention
from .causal_block import CausalBlock
from .code_init import add_code_vectors, tokenizer_code_vectors
from .magvlt import LAYOUT_SPECIAL_SLOTS, MagvltModel, _init_weights
from .presets import Architecture


@attrs.define
class KVCache:
    """Every layer's keys and values [B, H, P, D/H] for the P slots run so far, and which of them are padding."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    key_padding: torch.Tensor  # [B, P]

    @property
    def length(self) -> int:
        return self.key_padding.shape[1]


class ArgvltModel(nn.Module):
    name: ClassVar[str] = "argvlt"
    default_sampler: ClassVar[str] = "autoregressive"  # token by token with a KV cache, as the paper samples ARGVLT
    attention: ClassVar[str] = "causal"  # trained by causal_lm only (see plugins/stages/train_model.py)

    @attrs.frozen(kw_only=True)
    class Config(MagvltModel.Config):
        """MAGVLT's options (preset, sizes, code_init_scale): the twins differ only in the direction of attention."""

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        token_space: JointTokenSpace,
        tokenizers: Mapping[str, Any] | Iterable[Any] | None = None,
        **_deps: Any,
    ) -> ArgvltModel:
        """The model for `config`; with `tokenizers` (training from scratch) code embeddings start from their codes."""
        sizes = presets.architecture(
            config.preset,
            width=config.width,
            depth=config.depth,
            heads=config.heads,
            dropout=config.dropout,
            embedding_dropout=config.embedding_dropout,
        )
        model = cls(token_space=token_space, architecture=sizes, special_positions=config.special_positions)
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
            special_positions = sum(lengths) + LAYOUT_SPECIAL_SLOTS  # as MAGVLT, so the twins match in size
        table_sizes = [special_positions, *lengths]
        table_starts = [sum(table_sizes[:i]) for i in range(len(table_sizes))]
        self.register_buffer("table_sizes", torch.tensor(table_sizes), persistent=False)
        self.register_buffer("table_starts", torch.tensor(table_starts), persistent=False)

        self.embedding = nn.Embedding(token_space.vocab_size, width)
        self.positions = nn.Embedding(sum(table_sizes), width)
        self.embedding_dropout = nn.Dropout(architecture.embedding_dropout)
        self.blocks = nn.ModuleList(
            CausalBlock(
                width=width, heads=architecture.heads, dropout=architecture.dropout, mlp_ratio=architecture.mlp_ratio
            )
            for _ in range(architecture.depth)
        )
        # MAGVLT's output head (sec. 3.1). No length head: a caption ends where end-of-text is sampled.
        self.head_dense = nn.Linear(width, width)
        self.head_norm = nn.LayerNorm(width)
        self.output_bias = nn.Parameter(torch.zeros(token_space.content_size))
        self.activation_checkpointing = False
        self.apply(_init_weights)

    def forward(self, packed: Packed) -> torch.Tensor:
        """Hidden states [B, S, D] of a packed sequence; every slot sees only itself and earlier slots."""
        hidden, _ = self._run(packed, keep=False)
        return hidden

    def prefill(self, packed: Packed) -> tuple[torch.Tensor, KVCache]:
        """Hidden states [B, S, D] of `packed` (as `forward`) and the cache of its keys and values."""
        hidden, layers = self._run(packed, keep=True)
        return hidden, KVCache(layers=layers, key_padding=packed.key_padding)

    def extend(
        self,
        tokens: torch.Tensor,
        table: torch.Tensor,
        position: torch.Tensor,
        cache: KVCache,
        *,
        key_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, n, D] of n new slots (joint ids [B, n]; table and position [n]) after the cached ones.

        The new slots see every cached slot that is not padding and, left to right, each other
        (`key_padding` [B, n] marks new slots that are padding; None: none is). Their keys and
        values are appended to `cache`.
        """
        batch, count = tokens.shape
        if key_padding is None:
            key_padding = torch.zeros_like(tokens, dtype=torch.bool)
        earlier = (~cache.key_padding)[:, None, :].expand(batch, count, cache.length)
        mask = torch.cat([earlier, causal_attention(key_padding)], dim=2)[:, None]
        x = self._embed(tokens, table, position)
        for index, block in enumerate(self.blocks):
            x, cache.layers[index] = block(x, mask, past=cache.layers[index])
        cache.key_padding = torch.cat([cache.key_padding, key_padding], dim=1)
        return x

    def _run(self, packed: Packed, *, keep: bool) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        mask = causal(packed).attn_mask[:, None]  # SDPA broadcasts one mask over the heads
        x = self._embed(packed.tokens, packed.table, packed.position)
        layers = []
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x, kv = block(x, mask)
            if keep:
                layers.append(kv)
        return x, layers

    def _embed(self, tokens: torch.Tensor, table: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        # Checked eagerly only: the check syncs with the device and would break a compiled graph.
        if not torch.compiler.is_compiling() and bool((position >= self.table_sizes[table]).any()):
            raise ValueError(
                f"a position exceeds its table (sizes {self.table_sizes.tolist()}): "
                f"tables {table.tolist()}, positions {position.tolist()}"
            )
        x = self.embedding(tokens) + self.positions(self.table_starts[table] + position)
        return self.embedding_dropout(x)

    def logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        """[..., vocab_size of `modality`]: scores over that modality's content ids only."""
        start, stop = self.token_space.content_range(modality)
        h = self.head_norm(F.gelu(self.head_dense(hidden)))
        return F.linear(h, self.embedding.weight[start:stop], self.output_bias[start:stop])

    def init_code_embeddings(self, modality: str, vectors: torch.Tensor, *, scale: float) -> None:
        """Add a projection of `modality`'s tokenizer code vectors [K, D] to its (tied) code embeddings."""
        start, stop = self.token_space.content_range(modality)
        add_code_vectors(self.embedding.weight[start:stop], vectors, scale=scale, where=f"argvlt {modality} codes")

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute each block in backward instead of storing its activations."""
        self.activation_checkpointing = enabled

    def fsdp_units(self) -> list[nn.Module]:
        """The modules to shard one by one (FSDP2 `fully_shard`): the blocks."""
        return list(self.blocks)
