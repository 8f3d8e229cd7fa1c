"""Packing segments into one model sequence.

MAGVLT sec. 3.1: `[BOC] [BEGIN_a] a... [BOG] [BEGIN_b] b...`; the order of
segments says the task. Each segment's tokens get positions in its modality's
own table; every special token gets the next slot of the specials table.
"""

from __future__ import annotations

from typing import Sequence

import attrs
import torch

from .batch import Segment
from .token_space import JointTokenSpace

SPECIALS_TABLE = 0  # position-table index of special tokens; modality i uses table i + 1


@attrs.frozen(kw_only=True)
class Part:
    """One segment to place in the sequence.

    `mask` [B, L] marks positions replaced by the modality's MASK token.
    `predict_length`: the segment's BEGIN query sees only what precedes it, so a
    length head on it cannot read the answer from the (partly visible) segment.
    """

    segment: Segment
    mask: torch.Tensor | None = None
    predict_length: bool = False


@attrs.frozen(kw_only=True)
class Span:
    """Where a part landed: tokens at [start, start + length), its BEGIN at `begin`."""

    modality: str
    start: int
    length: int
    begin: int
    part_index: int

    @property
    def stop(self) -> int:
        return self.start + self.length


@attrs.frozen(kw_only=True)
class Packed:
    """A batch of model-ready sequences.

    tokens [B, S] joint ids (masks applied); table / position [S] pick the
    learned position embedding; key_padding [B, S] marks padding (never attended
    to); attn_mask [B, S, S] (True = may attend) or None for full attention.
    segment [S]: which Part each slot belongs to, counted over the Parts in order
    whatever their modality (a special token belongs to the Part it precedes:
    `[BOC]` and the first BEGIN are segment 0; `[BOG]` is the target's), for a
    model's segment-index embedding (in-context sequences of several pairs).
    """

    tokens: torch.Tensor
    table: torch.Tensor
    position: torch.Tensor
    key_padding: torch.Tensor
    attn_mask: torch.Tensor | None
    spans: tuple[Span, ...]
    segment: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def span(self, modality: str, index: int = 0) -> Span:
        found = [s for s in self.spans if s.modality == modality]
        if index >= len(found):
            raise KeyError(f"sequence has {len(found)} span(s) of modality {modality!r}, asked for #{index}")
        return found[index]


def pack(space: JointTokenSpace, items: Sequence[str | Part]) -> Packed:
    """Lay out `items` (special-token names such as "BOC" / "BOG", or Parts) in order.

    A BEGIN_<modality> token is inserted before each Part automatically. Any
    number of Parts of any modalities may follow each other (in-context pairs:
    `[BOC] a0 b0 a1 b1 ... b_k [BOG] a_k`); every special token takes the next
    slot of the specials table, as in the two-part layouts.
    """
    parts = [item for item in items if isinstance(item, Part)]
    if not parts:
        raise ValueError("pack() needs at least one Part")
    batch = parts[0].segment.batch_size
    device = parts[0].segment.tokens.device

    pieces: list[torch.Tensor] = []
    pads: list[torch.Tensor] = []
    tables: list[int] = []
    positions: list[torch.Tensor] = []
    segments: list[int] = []
    spans: list[Span] = []
    length_queries: list[int] = []
    cursor = 0
    special_slot = 0

    def add_special(token_id: int) -> None:
        nonlocal cursor, special_slot
        pieces.append(torch.full((batch, 1), token_id, dtype=torch.long, device=device))
        pads.append(torch.zeros(batch, 1, dtype=torch.bool, device=device))
        tables.append(SPECIALS_TABLE)
        positions.append(torch.tensor([special_slot], device=device))
        segments.append(len(spans))  # the Part it precedes (or belongs to: its BEGIN)
        special_slot += 1
        cursor += 1

    for item in items:
        if isinstance(item, str):
            add_special(space.special(item))
            continue
        seg = item.segment
        if seg.batch_size != batch:
            raise ValueError(f"part {seg.modality!r} has batch {seg.batch_size}, expected {batch}")
        modality_space = space.space(seg.modality)
        if seg.tokens.shape[1] != modality_space.length:
            raise ValueError(
                f"segment {seg.modality!r} has {seg.tokens.shape[1]} tokens, its space expects {modality_space.length}"
            )
        begin = cursor
        add_special(space.begin_id(seg.modality))
        tokens = seg.tokens + space.offset(seg.modality)
        if item.mask is not None:
            tokens = torch.where(item.mask, torch.full_like(tokens, space.mask_id(seg.modality)), tokens)
        pieces.append(tokens)
        pads.append(~seg.valid())
        n = seg.tokens.shape[1]
        tables.extend([space.modality_index(seg.modality) + 1] * n)
        positions.append(torch.arange(n, device=device))
        segments.extend([len(spans)] * n)
        spans.append(Span(modality=seg.modality, start=cursor, length=n, begin=begin, part_index=len(spans)))
        if item.predict_length:
            length_queries.append(begin)
        cursor += n

    key_padding = torch.cat(pads, dim=1)
    attn_mask = None
    if length_queries or bool(key_padding.any()):
        attn_mask = (~key_padding)[:, None, :].expand(batch, cursor, cursor).clone()
        for q in length_queries:
            attn_mask[:, q, q + 1 :] = False
        # A query row must see something; padding rows attend to themselves.
        eye = torch.eye(cursor, dtype=torch.bool, device=device)[None]
        attn_mask |= eye & key_padding[:, :, None]
    return Packed(
        tokens=torch.cat(pieces, dim=1),
        table=torch.tensor(tables, device=device),
        position=torch.cat(positions),
        key_padding=key_padding,
        attn_mask=attn_mask,
        spans=tuple(spans),
        segment=torch.tensor(segments, device=device),
    )
