"""MixSel's mixture function phi(X1, X2) at the token level (MAGVLT sec. 3.2).

Images: the paper resizes two images to halves and joins them left|right or
top/bottom. On token grids, the direct approximation is a nearest-neighbour
resize of each grid to half its width (height): the half keeps every column
(row) centre `floor((j + 0.5) * W / k)`, so the whole of each image, squeezed,
appears in its half and a caption of it stays true (`how="resize"`). The
alternative `how="crop"` pastes image 1's own left half beside image 2's right
half (CutMix-like: positions kept, but half of each scene is lost).

Texts: the two captions joined with a separator, the first without its
end-of-text. A joined pair longer than the maximum length is an error, never
cut: MixSel picks partners that fit (`joined_lengths`, mixsel.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmgen.api import Segment


def half_sizes(size: int) -> tuple[int, int]:
    first = (size + 1) // 2
    return first, size - first


def resize_indices(size: int, half: int, device: torch.device | str) -> torch.Tensor:
    """Nearest-neighbour source indices that shrink `size` cells to `half` cells."""
    return ((torch.arange(half, device=device) + 0.5) * size / half).floor().long()


def _join_halves(first: torch.Tensor, second: torch.Tensor, *, dim: int, how: str) -> torch.Tensor:
    """first, second [B, H, W]: first's half then second's half along `dim` (1 rows, 2 columns)."""
    size = first.shape[dim]
    a, b = half_sizes(size)
    if how == "crop":
        return torch.cat([first.narrow(dim, 0, a), second.narrow(dim, a, b)], dim=dim)
    if how != "resize":
        raise ValueError(f"unknown mixing {how!r}: use 'resize' or 'crop'")
    device = first.device
    return torch.cat(
        [
            first.index_select(dim, resize_indices(size, a, device)),
            second.index_select(dim, resize_indices(size, b, device)),
        ],
        dim=dim,
    )


def mix_grids(
    first: torch.Tensor, second: torch.Tensor, *, shape: tuple[int, int], vertical: torch.Tensor, how: str = "resize"
) -> torch.Tensor:
    """[B, H*W] grids (row-major) mixed half and half: left|right, or top/bottom where `vertical` [B]."""
    height, width = shape
    a = first.reshape(-1, height, width)
    b = second.reshape(-1, height, width)
    side_by_side = _join_halves(a, b, dim=2, how=how)
    stacked = _join_halves(a, b, dim=1, how=how) if height > 1 else side_by_side
    mixed = torch.where(vertical[:, None, None], stacked, side_by_side)
    return mixed.reshape(first.shape)


def head_lengths(segment: Segment, eos_id: int | None) -> torch.Tensor:
    """[B] each row's length without its final end-of-text (the part a joined caption keeps of a first one)."""
    lengths = segment.lengths
    if eos_id is None:
        return lengths
    last = segment.tokens.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
    return lengths - ((lengths > 0) & (last == eos_id)).long()


def joined_lengths(
    segment: Segment, own: torch.Tensor, own_second: torch.Tensor, *, separator: Sequence[int], eos_id: int | None
) -> torch.Tensor:
    """[R, B] length of row own[i]'s caption joined with row p's, in the order own_second[i] says."""
    heads = head_lengths(segment, eos_id)
    own_first = heads[own][:, None] + len(separator) + segment.lengths[None, :]
    own_last = heads[None, :] + len(separator) + segment.lengths[own][:, None]
    return torch.where(own_second[:, None], own_last, own_first)


def join_sequences(
    first: Segment, second: Segment, *, separator: Sequence[int], eos_id: int | None, pad_id: int
) -> Segment:
    """Row b: first[b] (without its end-of-text) + separator + second[b]; never cut (too long: ValueError)."""
    length = first.tokens.shape[1]
    rows, lengths = [], []
    for index, (a, n, b, m) in enumerate(
        zip(first.tokens.tolist(), first.lengths.tolist(), second.tokens.tolist(), second.lengths.tolist(), strict=True)
    ):
        head = a[:n]
        if eos_id is not None and head and head[-1] == eos_id:
            head = head[:-1]
        joined = head + list(separator) + b[:m]
        if len(joined) > length:
            raise ValueError(f"joined captions of row {index} take {len(joined)} tokens, more than {length}")
        lengths.append(len(joined))
        rows.append(joined + [pad_id] * (length - len(joined)))
    device = first.tokens.device
    return Segment(
        modality=first.modality,
        tokens=torch.tensor(rows, dtype=first.tokens.dtype, device=device),
        lengths=torch.tensor(lengths, dtype=first.lengths.dtype, device=device),
    )
