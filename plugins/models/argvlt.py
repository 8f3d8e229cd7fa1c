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

from typing import ClassVar

import attrs
import torch
from torch.utils.checkpoint import checkpoint

from mmgen.api import JointTokenSpace, Packed

from .causal import causal, causal_attention
from .causal_block import CausalBlock
from .magvlt import MagvltModel
from .presets import Architecture
from .token_transformer import MaskPositions, TokenTransformer, init_weights
from .transformer_block import grow_slots


@attrs.define
class KVCache:
    """Every layer's keys and values for the slots run so far, in buffers allocated once.

    `keys[i]` / `values[i]` [B, H, capacity, D/H] hold layer i's first `length` slots (the rest is
    room for later ones); `padding` [B, capacity] marks cached slots that are padding. A step writes
    its slot in place; only when the room runs out are the buffers reallocated, twice as long.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    padding: torch.Tensor
    length: int

    @property
    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values of the cached slots [B, H, length, D/H] (views)."""
        return [(k[:, :, : self.length], v[:, :, : self.length]) for k, v in zip(self.keys, self.values)]

    @property
    def key_padding(self) -> torch.Tensor:
        """[B, length]: True where a cached slot is padding."""
        return self.padding[:, : self.length]

    def reserve(self, count: int) -> None:
        """Room for `count` more slots (buffers doubled, at least to fit, when they are full)."""
        capacity = self.padding.shape[1]
        if self.length + count <= capacity:
            return
        grown = max(2 * capacity, self.length + count)
        self.keys = [grow_slots(k, grown) for k in self.keys]
        self.values = [grow_slots(v, grown) for v in self.values]
        self.padding = grow_slots(self.padding, grown, dim=1)


class ArgvltModel(TokenTransformer):
    name: ClassVar[str] = "argvlt"
    default_sampler: ClassVar[str] = "autoregressive"  # token by token with a KV cache, as the paper samples ARGVLT
    attention: ClassVar[str] = "causal"  # trained by causal_lm only (see plugins/stages/train_model.py)

    @attrs.frozen(kw_only=True)
    class Config(MagvltModel.Config):
        """MAGVLT's options (preset, sizes, code_init_scale): the twins differ only in the direction of attention."""

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            if self.condition_attention != "full":
                # Left to right, the context already sees only itself; "own" would change nothing and say otherwise.
                raise ValueError(f"argvlt has no condition_attention {self.condition_attention!r}: leave it full")

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        architecture: Architecture,
        special_positions: int | None = None,
        mask_positions: MaskPositions = "special",
    ) -> None:
        # MAGVLT's tables and output head (sec. 3.1), so the twins match in size. No length head:
        # a caption ends where end-of-text is sampled.
        super().__init__(
            token_space=token_space,
            architecture=architecture,
            special_positions=special_positions,
            mask_positions=mask_positions,
            block=CausalBlock,
        )
        self.apply(init_weights)

    def forward(self, packed: Packed) -> torch.Tensor:
        """Hidden states [B, S, D] of a packed sequence; every slot sees only itself and earlier slots."""
        hidden, _ = self._run(packed, keep=False)
        return hidden

    def prefill(self, packed: Packed, *, capacity: int | None = None) -> tuple[torch.Tensor, KVCache]:
        """Hidden states [B, S, D] of `packed` (as `forward`) and the cache of its keys and values.

        `capacity`: the slots the cache will hold in all (prefix and every slot `extend` adds), so its
        buffers are allocated once; None: the prefix's length (then they grow as needed).
        """
        hidden, layers = self._run(packed, keep=True)
        length = packed.tokens.shape[1]
        room = max(capacity or length, length)
        keys = [grow_slots(k, room) if room > length else k.contiguous() for k, _ in layers]
        values = [grow_slots(v, room) if room > length else v.contiguous() for _, v in layers]
        padding = grow_slots(packed.key_padding, room, dim=1)
        return hidden, KVCache(keys=keys, values=values, padding=padding, length=length)

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
        values are written into `cache`.
        """
        batch, count = tokens.shape
        if key_padding is None:
            key_padding = torch.zeros_like(tokens, dtype=torch.bool)
        cache.reserve(count)
        at = cache.length
        earlier = (~cache.key_padding)[:, None, :].expand(batch, count, at)
        mask = torch.cat([earlier, causal_attention(key_padding)], dim=2)[:, None]
        x = self.embed(tokens, table, position)
        for index, block in enumerate(self.blocks):
            x = block.extend(x, mask, cache.keys[index], cache.values[index], at=at)
        cache.padding[:, at : at + count] = key_padding
        cache.length = at + count
        return x

    def _run(self, packed: Packed, *, keep: bool) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        mask = causal(packed).attn_mask[:, None]  # SDPA broadcasts one mask over the heads
        x = self.embed(packed.tokens, packed.table, packed.position)
        layers = []
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x, kv = block(x, mask)
            if keep:
                layers.append(kv)
        return x, layers
