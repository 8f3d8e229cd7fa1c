"""Mask ratios and uniform mask positions (MAGVLT sec. 3.2, mask prediction).

A fixed-length modality (image) masks cos(pi r / 2) of its tokens, a
variable-length one (text) r of them, for one r ~ U(0, 1) per sample; the count
is clamp(ceil(ratio * n), 1, n) over the n valid tokens (text: the caption
including its end-of-text), drawn uniformly, so padding is never masked.
"""

from __future__ import annotations

import math

import torch

from mmgen.api import TokenSpace


def uniform(shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """U(0, 1) drawn on the generator's device (any device), returned on `device`."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def mask_ratio(space: TokenSpace, r: torch.Tensor) -> torch.Tensor:
    """The share of `space`'s tokens to mask for r ~ U(0, 1): cos(pi r / 2) or r."""
    if space.variable_length:
        return r
    return torch.cos(0.5 * math.pi * r)


def mask_count(ratio: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """clamp(ceil(ratio * n), 1, n) per row (0 when a row has nothing to mask)."""
    count = torch.ceil(ratio * available).long().clamp(min=1)
    return torch.minimum(count, available)


def draw_positions(allowed: torch.Tensor, ratio: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """[B, L] bool: mask_count(ratio, n) of each row's allowed positions, uniformly at random.

    Draws one U(0, 1) score per position; the lowest `count` allowed scores are masked.
    """
    scores = uniform(tuple(allowed.shape), generator=generator, device=allowed.device)
    scores = scores.masked_fill(~allowed, 2.0)  # never among the lowest `count`
    rank = scores.argsort(dim=1).argsort(dim=1)
    count = mask_count(ratio, allowed.sum(dim=1))
    return rank < count[:, None]
