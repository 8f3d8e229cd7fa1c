"""A convolution over each grid segment's input embeddings: an optional locality prior (off by default).

Not in the paper, whose transformer sees image tokens only through learned
positions. The motive is I2T's shape word on Shapes: a shape is a spatial
arrangement of 4-9 VQ codes, and a bag of codes names it only 63% of the time
(a linear classifier on code counts, held-out one-object images), while two
3x3 convolutions over the code grid name it 99% of the time after 400
updates. `local_mixing: k` adds `conv_k(x)` to the embeddings of every
segment whose token space is a 2-D grid (images; text is untouched), before
the first block. The convolution starts at zero, so a new model starts as the
paper's; masked positions take part like any other.

Measured (README, "Local mixing"): in MAGVLT it slows T2I early on, so the
recipes leave it off: quickstart training, 450 updates, 128 test prompts, one
candidate, T2I all-correct 0.08 with k = 3 against 0.30 without (object cell
right 0.48 against 0.88). It is here, with CLIP's `local_mixing`, for
experiments at other scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmgen.layout import Span
from mmgen.token_space import JointTokenSpace


def check_kernel(kernel: int, *, where: str) -> None:
    if kernel < 0 or (kernel and kernel % 2 == 0):
        raise ValueError(f"{where}: local_mixing must be 0 (off) or an odd kernel size, got {kernel}")


class GridMixing(nn.Module):
    """`x + conv(x)` for the tokens of one grid [B, H*W, D] in row-major order; the conv starts at zero."""

    def __init__(self, *, width: int, kernel: int) -> None:
        super().__init__()
        check_kernel(kernel, where="grid mixing")
        self.conv = nn.Conv2d(width, width, kernel, padding=kernel // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        batch, length, width = tokens.shape
        if length != grid[0] * grid[1]:
            raise ValueError(f"grid mixing: {length} tokens are not a {grid} grid")
        image = tokens.transpose(1, 2).reshape(batch, width, *grid)
        return tokens + self.conv(image).flatten(2).transpose(1, 2)


class LocalMixing(GridMixing):
    """GridMixing at every span of a packed sequence whose modality is a 2-D grid."""

    def __init__(self, token_space: JointTokenSpace, *, width: int, kernel: int) -> None:
        super().__init__(width=width, kernel=kernel)
        self.grids = {s.name: tuple(s.shape) for s in token_space.spaces if len(s.shape) == 2}

    def forward(self, x: torch.Tensor, spans: Sequence[Span]) -> torch.Tensor:
        """x [B, S, D] with `conv(grid)` added at each grid segment's positions."""
        pieces, cursor = [], 0
        for span in spans:
            grid = self.grids.get(span.modality)
            if grid is None:
                continue
            if span.length != grid[0] * grid[1]:
                raise ValueError(f"local mixing: a {span.modality} span of {span.length} tokens is not its {grid} grid")
            pieces += [x[:, cursor : span.start], super().forward(x[:, span.start : span.stop], grid)]
            cursor = span.stop
        if not pieces:
            return x
        return torch.cat([*pieces, x[:, cursor:]], dim=1)
