"""Two tiny tokenizers (image blocks, text characters) for the token cache tests."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from mmgen.batch import Segment
from mmgen.token_space import TokenSpace


class BlockImageTokenizer:
    """Each token: the mean grey level of one block of a `grid` x `grid` split, in `levels` steps."""

    name: ClassVar[str] = "block_image"
    modality = "image"

    def __init__(self, *, grid: int = 4, levels: int = 16, block: int = 8) -> None:
        self.grid, self.levels, self.block = grid, levels, block

    @property
    def token_space(self) -> TokenSpace:
        return TokenSpace(name="image", vocab_size=self.levels, shape=(self.grid, self.grid))

    def load_item(self, data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)

    def encode(self, items: torch.Tensor) -> Segment:
        grey = items.float().mean(dim=1, keepdim=True)
        blocks = torch.nn.functional.adaptive_avg_pool2d(grey, self.grid).flatten(1)
        return Segment.full("image", (blocks * self.levels / 256).long().clamp(0, self.levels - 1))

    def encode_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Images of any size in whole `block` x `block` pixel blocks -> [B, H / block, W / block] (MixSel's halves)."""
        grey = torch.nn.functional.avg_pool2d(images.float().mean(dim=1, keepdim=True), self.block)[:, 0]
        return (grey * self.levels / 256).long().clamp(0, self.levels - 1)

    def decode(self, segment: Segment) -> list[Any]:
        return list(segment.tokens)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)

    def content_hash(self) -> str:
        return f"block-{self.grid}-{self.levels}"


class CharTokenizer:
    """Lower-case letters and space; id 0 is end-of-text and padding."""

    name: ClassVar[str] = "chars"
    modality = "text"
    alphabet = " abcdefghijklmnopqrstuvwxyz"

    def __init__(self, *, length: int = 12) -> None:
        self.length = length

    @property
    def token_space(self) -> TokenSpace:
        return TokenSpace(
            name="text",
            vocab_size=len(self.alphabet) + 1,
            shape=(self.length,),
            variable_length=True,
            pad_id=0,
            eos_id=0,
        )

    def load_item(self, data: bytes) -> str:
        return data.decode()

    def encode(self, items: list[str]) -> Segment:
        rows = [
            [1 + self.alphabet.index(c) for c in text if c in self.alphabet][: self.length - 1] + [0] for text in items
        ]
        tokens = torch.zeros(len(rows), self.length, dtype=torch.long)
        for b, row in enumerate(rows):
            tokens[b, : len(row)] = torch.tensor(row)
        return Segment(modality="text", tokens=tokens, lengths=torch.tensor([len(r) for r in rows]))

    def decode(self, segment: Segment) -> list[str]:
        return [
            "".join(self.alphabet[t - 1] for t in row[:n] if t)
            for row, n in zip(segment.tokens.tolist(), segment.lengths.tolist())
        ]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)

    def content_hash(self) -> str:
        return f"chars-{self.length}"
