"""A small CLIP-style dual encoder over tokens (Radford et al., 2021), for reranking and scoring.

Images are encoded from their VQ tokens, not pixels: the tokens are what the
generator produces and what the token cache already holds, so training reads
no pixels and reranking 32-64 candidates needs no VQ-GAN decode. The price: a
generated image is judged through its tokens, which is exactly what the
decoder will render.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from mmgen.api import atomic_write_bytes, atomic_write_text
from mmgen.plugins.models.transformer_block import TransformerBlock

WEIGHTS = "clip.pt"
SIZES = "clip.json"
FORMAT = 1


@attrs.frozen(kw_only=True)
class ClipSizes:
    """Everything needed to rebuild a ClipModel."""

    image_vocab: int
    image_length: int
    text_vocab: int
    text_length: int
    width: int = 128
    depth: int = 2
    heads: int = 4
    embed_dim: int = 64


class TokenEncoder(nn.Module):
    """Token ids -> one unit vector: a [CLS] slot read out after a few pre-LN transformer blocks."""

    def __init__(
        self,
        *,
        vocab: int,
        length: int,
        width: int,
        depth: int,
        heads: int,
        embed_dim: int,
    ) -> None:
        super().__init__()
        self.cls_id = vocab
        self.embedding = nn.Embedding(vocab + 1, width)
        self.positions = nn.Embedding(length + 1, width)
        self.blocks = nn.ModuleList(TransformerBlock(width=width, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.01)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = tokens.shape
        cls = torch.full((batch, 1), self.cls_id, dtype=tokens.dtype, device=tokens.device)
        x = self.embedding(torch.cat([cls, tokens], dim=1)) + self.positions.weight[: length + 1]
        mask = None
        if lengths is not None:
            # Padding is never attended to; [CLS] (slot 0) is always visible.
            keys = torch.arange(length + 1, device=tokens.device)[None, :] <= lengths[:, None]
            mask = keys[:, None, None, :].expand(batch, 1, length + 1, length + 1)
        for block in self.blocks:
            x = block(x, mask)
        return F.normalize(self.project(self.norm(x[:, 0])), dim=-1)


class ClipModel(nn.Module):
    """Image tokens and text tokens -> unit embeddings in one space, with a learned temperature."""

    def __init__(self, sizes: ClipSizes) -> None:
        super().__init__()
        self.sizes = sizes
        shared = dict(width=sizes.width, depth=sizes.depth, heads=sizes.heads, embed_dim=sizes.embed_dim)
        self.image_encoder = TokenEncoder(vocab=sizes.image_vocab, length=sizes.image_length, **shared)
        self.text_encoder = TokenEncoder(vocab=sizes.text_vocab, length=sizes.text_length, **shared)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def encode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(tokens)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(tokens, lengths)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clipped at 100 as in CLIP."""
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


def save_clip(model: ClipModel, directory: Path) -> None:
    directory = Path(directory)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(directory / WEIGHTS, buffer.getvalue())
    atomic_write_text(directory / SIZES, json.dumps({"format": FORMAT, **attrs.asdict(model.sizes)}, indent=2))


def load_clip(directory: Path, *, device: str | torch.device = "cpu") -> ClipModel:
    directory = Path(directory)
    if not (directory / SIZES).is_file():
        raise FileNotFoundError(f"no {SIZES} in {directory}: is it the folder of a clip stage?")
    data = json.loads((directory / SIZES).read_text())
    if data.pop("format") != FORMAT:
        raise ValueError(f"{directory / SIZES}: unsupported format (expected {FORMAT})")
    model = ClipModel(ClipSizes(**data))
    model.load_state_dict(torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True))
    return model.to(device).eval()
