"""A fake MAGVLT with known logits, and tiny tokenizers, for sampler and task tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from mmgen.batch import Segment
from mmgen.layout import Packed
from mmgen.token_space import JointTokenSpace, TokenSpace

NEG = -math.inf


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run ~15x faster on one thread when the 2 shared cores are busy (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spaces(*, image_shape=(2, 2), image_vocab=8, text_length=6, text_vocab=10) -> JointTokenSpace:
    image = TokenSpace(name="image", vocab_size=image_vocab, shape=image_shape)
    text = TokenSpace(
        name="text", vocab_size=text_vocab, shape=(text_length,), variable_length=True, pad_id=0, eos_id=0
    )
    return JointTokenSpace(spaces=(image, text))


def uniform_over(counts: list[int], vocab: int) -> torch.Tensor:
    """[L, V] logits: position p is uniform over tokens 0..counts[p]-1, so log p(any draw) = -log counts[p]."""
    table = torch.full((len(counts), vocab), NEG)
    for position, count in enumerate(counts):
        table[position, :count] = 0.0
    return table


def peaked(tokens: list[int], vocab: int) -> torch.Tensor:
    """[L, V] logits that (almost surely) pick `tokens[p]` at position p."""
    table = torch.full((len(tokens), vocab), -30.0)
    table[torch.arange(len(tokens)), torch.tensor(tokens)] = 30.0
    return table


class FakeModel:
    """Logits fixed per (modality, position); a `conditioned` shift when any context token is visible.

    Hidden state per sequence slot: (position in its table, 1 if the row's
    context shows a real token else 0). Every packed input is recorded.
    """

    name: ClassVar[str] = "fake"

    def __init__(
        self,
        token_space: JointTokenSpace,
        logits: dict[str, torch.Tensor],
        *,
        conditioned_shift: dict[str, torch.Tensor] | None = None,
        length_logits: torch.Tensor | None = None,
    ):
        self.token_space = token_space
        self.table = logits
        self.shift = conditioned_shift or {m: torch.zeros_like(t) for m, t in logits.items()}
        self.length_table = length_logits
        self.calls: list[Packed] = []

    def __call__(self, packed: Packed) -> torch.Tensor:
        self.calls.append(packed)
        bog = (packed.tokens[0] == self.token_space.special("BOG")).nonzero()[0, 0]
        context = packed.tokens[:, :bog]
        conditioned = (context < self.token_space.content_size).any(dim=1).float()
        batch, length = packed.tokens.shape
        return torch.stack(
            [packed.position.float().expand(batch, length), conditioned[:, None].expand(batch, length)], -1
        )

    def logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        position = hidden[..., 0].long()
        conditioned = hidden[..., 1:2]
        shift = self.shift[modality][position]
        return self.table[modality][position] + torch.where(conditioned > 0, shift, torch.zeros_like(shift))

    def length_logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        return self.length_table.expand(*hidden.shape[:-1], -1)

    def masked_in(self, call: int, modality: str, index: int = -1) -> torch.Tensor:
        """[B, L] True where call `call` showed MASK in the `index`-th span of `modality`."""
        packed = self.calls[call]
        span = [s for s in packed.spans if s.modality == modality][index]
        return packed.tokens[:, span.start : span.stop] == self.token_space.mask_id(modality)

    def seen(self, call: int, modality: str, index: int = -1) -> torch.Tensor:
        packed = self.calls[call]
        span = [s for s in packed.spans if s.modality == modality][index]
        return packed.tokens[:, span.start : span.stop] - self.token_space.offset(modality)


class GridImageTokenizer:
    """Image <-> tokens: each token is the mean grey level of a block, quantised to `vocab` levels."""

    name: ClassVar[str] = "grid_image"
    modality = "image"

    def __init__(self, *, grid: tuple[int, int] = (2, 2), size: int = 8, vocab: int = 8, modality: str = "image"):
        self.grid, self.size, self.vocab = grid, size, vocab
        self.modality = modality

    @property
    def token_space(self) -> TokenSpace:
        return TokenSpace(name=self.modality, vocab_size=self.vocab, shape=self.grid)

    def load_item(self, data: bytes) -> torch.Tensor:
        import io

        from PIL import Image

        array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((self.size, self.size)))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def encode(self, items: Any) -> Segment:
        images = torch.stack(list(items)) if not torch.is_tensor(items) else items
        grey = images.float().mean(dim=1, keepdim=True)
        blocks = torch.nn.functional.adaptive_avg_pool2d(grey, self.grid).flatten(1)
        return Segment.full(self.modality, (blocks / 256 * self.vocab).long().clamp(0, self.vocab - 1))

    def decode(self, segment: Segment) -> list[torch.Tensor]:
        levels = (segment.tokens.float() + 0.5) * 256 / self.vocab
        grid = levels.view(-1, 1, *self.grid)
        images = torch.nn.functional.interpolate(grid, size=(self.size, self.size), mode="nearest")
        return [image.expand(3, -1, -1).round().clamp(0, 255).to(torch.uint8) for image in images]

    def present(self, item: torch.Tensor) -> np.ndarray:
        """An image as a Generation holds it (the VQ-GAN's way): uint8 [3, H, W] tensor -> numpy uint8 [H, W, 3]."""
        return item.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous().numpy()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)

    def content_hash(self) -> str:
        return f"grid-{self.grid}-{self.size}-{self.vocab}"


class WordTokenizer:
    """Text <-> tokens over a fixed word list; id 0 is end-of-text and padding."""

    name: ClassVar[str] = "words"
    modality = "text"

    def __init__(self, *, words: tuple[str, ...], length: int = 6, modality: str = "text"):
        self.words = ("<eos>", *words)
        self.length = length
        self.modality = modality

    @property
    def token_space(self) -> TokenSpace:
        return TokenSpace(
            name=self.modality,
            vocab_size=len(self.words),
            shape=(self.length,),
            variable_length=True,
            pad_id=0,
            eos_id=0,
        )

    def load_item(self, data: bytes) -> str:
        return data.decode()

    def encode(self, items: Any) -> Segment:
        rows = [[self.words.index(w) for w in text.split()][: self.length - 1] + [0] for text in items]
        tokens = torch.zeros(len(rows), self.length, dtype=torch.long)
        for b, row in enumerate(rows):
            tokens[b, : len(row)] = torch.tensor(row)
        return Segment(modality=self.modality, tokens=tokens, lengths=torch.tensor([len(r) for r in rows]))

    def decode(self, segment: Segment) -> list[str]:
        texts = []
        for row, length in zip(segment.tokens.tolist(), segment.lengths.tolist()):
            words = []
            for token in row[:length]:
                if token == 0:
                    break
                words.append(self.words[token])
            texts.append(" ".join(words))
        return texts

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)

    def content_hash(self) -> str:
        return "words-" + "-".join(self.words)
