"""MAGVLT with the condition attending to itself only (`condition_attention: own`; issue 22, an mmgen extension).

In the paper every slot attends to every slot, so the context's keys and values
change whenever the target does and a sampler recomputes them at every
refinement step. With "own", the context part of a sequence (`[BOC]`, the
context segments and their BEGINs: every slot before `[BOG]`) attends only to
the context part; slots from `[BOG]` on attend to everything, as before. The
context's keys and values then depend on the context alone: a sampler computes
them once per sample (`MagvltModel.encode_condition`) and runs only the target
part at each step (`MagvltModel.forward_target`).

Where the context ends is read from the layout, so it holds for every sequence
`pack()` makes: the slots pack() gave to special-token names (not to a Part's
BEGIN or tokens) are `[BOC]` and `[BOG]`, or the BOG_* marker MixSel writes in
`[BOG]`'s slot; the last of them is `[BOG]` unless it is `[BOC]` itself.
"""

from __future__ import annotations

import attrs
import torch

from mmgen.api import JointTokenSpace, Packed

from .transformer_block import grow_slots


def generation_slot(packed: Packed, space: JointTokenSpace) -> int | None:
    """The slot of `[BOG]` (or the marker in its place); None when the sequence has no target part."""
    covered = [False] * packed.tokens.shape[1]
    for span in packed.spans:
        covered[span.begin : span.stop] = [True] * (span.stop - span.begin)  # the Part's BEGIN and tokens
    named = [slot for slot, part in enumerate(covered) if not part]
    if not named:
        return None
    # A single named slot may be a lone [BOC] (`[BOC] image`: all context) or a lone [BOG] (`[BOG] image`).
    if len(named) == 1 and int(packed.tokens[0, named[0]]) == space.special("BOC"):
        return None
    return named[-1]


def allowed_keys(packed: Packed) -> torch.Tensor:
    """[B, S, S] True where a query may attend to a key: the Packed's own mask, or every key but padding."""
    if packed.attn_mask is not None:
        return packed.attn_mask
    padding = packed.key_padding
    slots = padding.shape[1]
    allowed = (~padding)[:, None, :].expand(-1, slots, -1)
    # As pack() does: a padding query sees itself, so that no row of the mask is empty.
    return allowed | (torch.eye(slots, dtype=torch.bool, device=padding.device)[None] & padding[:, :, None])


def own_condition_mask(packed: Packed, boundary: int | None) -> torch.Tensor | None:
    """The attention mask [B, S, S] of "own": a query before `boundary` sees only keys before it.

    None (full attention, SDPA's fastest kernel) where the Packed has no mask and no context part.
    """
    if not boundary:
        return packed.attn_mask
    slots = torch.arange(packed.tokens.shape[1], device=packed.tokens.device)
    context = slots < boundary
    return allowed_keys(packed) & ~(context[:, None] & ~context[None, :])


@attrs.define
class ConditionCache:
    """Every layer's keys and values of a sequence's context part, with room after it for the target's.

    `keys[i]` / `values[i]` [B, H, capacity, D/H] hold layer i's context keys and values in their first
    `length` slots; `forward_target` writes the target's after them, in place. `key_padding` [B, length]
    marks context slots that are padding.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_padding: torch.Tensor
    length: int

    @property
    def batch_size(self) -> int:
        return self.key_padding.shape[0]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else self.length

    def rows(self, count: int) -> ConditionCache:
        """The first `count` rows (views of the same buffers): guidance's conditional rows alone."""
        return ConditionCache(
            keys=[k[:count] for k in self.keys],
            values=[v[:count] for v in self.values],
            key_padding=self.key_padding[:count],
            length=self.length,
        )

    def concat(self, other: ConditionCache) -> ConditionCache:
        """These rows, then `other`'s (the same context length): guidance's conditional and unconditional rows."""
        if other.length != self.length:
            raise ValueError(f"conditions of {self.length} and {other.length} context slots do not stack")
        room = max(self.capacity, other.capacity)
        self.reserve(room)
        other.reserve(room)
        return ConditionCache(
            keys=[torch.cat(pair) for pair in zip(self.keys, other.keys)],
            values=[torch.cat(pair) for pair in zip(self.values, other.values)],
            key_padding=torch.cat([self.key_padding, other.key_padding]),
            length=self.length,
        )

    def reserve(self, slots: int) -> None:
        """Room for `slots` slots in all (context and target): the buffers grow when they are shorter."""
        if slots <= self.capacity:
            return
        self.keys = [grow_slots(k, slots) for k in self.keys]
        self.values = [grow_slots(v, slots) for v in self.values]

