"""Data that flows between stages: records, token segments and batches of them.

A sequence is a list of segments (not one image and one text), so in-context
generation over several pairs, or a third modality, needs no new type.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch


@attrs.frozen(kw_only=True)
class Record:
    """One source item as stored: its bytes untouched, its captions and metadata.

    `more` holds items of further modalities of the same example, by modality
    (a scene's sound beside its picture), their bytes untouched too; `data` is
    the item of `modality`.
    """

    key: str
    modality: str
    data: bytes
    captions: tuple[str, ...] = attrs.field(converter=tuple)
    meta: dict[str, Any] = attrs.field(factory=dict)
    more: dict[str, bytes] = attrs.field(factory=dict, converter=dict)

    def __attrs_post_init__(self) -> None:
        if self.modality in self.more:
            raise ValueError(f"record {self.key!r}: modality {self.modality!r} is both its main item and in `more`")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Every modality the record holds an item of, the main one first."""
        return (self.modality, *self.more)

    def item(self, modality: str) -> bytes:
        """The bytes of the record's item of `modality`."""
        if modality == self.modality:
            return self.data
        if modality not in self.more:
            raise KeyError(f"record {self.key!r} holds no {modality!r} item (it holds {list(self.modalities)})")
        return self.more[modality]


@attrs.frozen(kw_only=True)
class Segment:
    """A batch of one modality's tokens in modality-local ids.

    `tokens` is [B, L] with L the space's length; row b is valid up to
    `lengths[b]` and padded after it (fixed-length modalities: lengths == L).
    """

    modality: str
    tokens: torch.Tensor
    lengths: torch.Tensor

    def __attrs_post_init__(self) -> None:
        if self.tokens.ndim != 2:
            raise ValueError(f"segment {self.modality!r}: tokens must be [B, L], got shape {tuple(self.tokens.shape)}")
        if self.lengths.shape != (self.tokens.shape[0],):
            raise ValueError(
                f"segment {self.modality!r}: lengths must be [{self.tokens.shape[0]}], got {tuple(self.lengths.shape)}"
            )

    @classmethod
    def full(cls, modality: str, tokens: torch.Tensor) -> Segment:
        """A fixed-length segment: every position valid."""
        lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)
        return cls(modality=modality, tokens=tokens, lengths=lengths)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def valid(self) -> torch.Tensor:
        """[B, L] True where a position holds a real token (not padding)."""
        positions = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return positions[None, :] < self.lengths[:, None]

    def to(self, device: torch.device | str) -> Segment:
        return Segment(modality=self.modality, tokens=self.tokens.to(device), lengths=self.lengths.to(device))

    def select(self, index: torch.Tensor | slice) -> Segment:
        return Segment(modality=self.modality, tokens=self.tokens[index], lengths=self.lengths[index])


@attrs.frozen(kw_only=True)
class TokenBatch:
    """Segments of equal batch size, in sequence order.

    `extras`: per-row side data a dataset adds for an objective, by name, each a
    tensor [B, ...] (MixSel's squeezed image halves: plugins/datasets/mixsel_halves.py).
    They are moved and selected with the segments and are no part of the sequence.
    """

    segments: tuple[Segment, ...] = attrs.field(converter=tuple)
    extras: dict[str, torch.Tensor] = attrs.field(factory=dict, converter=dict, hash=False)

    def __attrs_post_init__(self) -> None:
        sizes = {s.batch_size for s in self.segments}
        if len(sizes) > 1:
            raise ValueError(f"segments disagree on batch size: {sorted(sizes)}")
        for name, extra in self.extras.items():
            if extra.ndim == 0 or (sizes and extra.shape[0] not in sizes):
                raise ValueError(f"batch extra {name!r} has shape {tuple(extra.shape)}, not [{self.batch_size}, ...]")

    @property
    def batch_size(self) -> int:
        return self.segments[0].batch_size if self.segments else 0

    def modality(self, name: str, index: int = 0) -> Segment:
        """The `index`-th segment of modality `name`."""
        found = [s for s in self.segments if s.modality == name]
        if index >= len(found):
            raise KeyError(f"batch has {len(found)} segment(s) of modality {name!r}, asked for #{index}")
        return found[index]

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            segments=tuple(s.to(device) for s in self.segments),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )

    def select(self, index: torch.Tensor | slice) -> TokenBatch:
        return TokenBatch(
            segments=tuple(s.select(index) for s in self.segments), extras={k: v[index] for k, v in self.extras.items()}
        )


@attrs.frozen(kw_only=True)
class Generation:
    """One generated example, decoded, with what it was conditioned on."""

    task: str
    key: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    reference: dict[str, Any] = attrs.field(factory=dict)
