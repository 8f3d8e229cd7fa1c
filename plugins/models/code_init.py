"""Code embeddings that start from the tokenizer's own code vectors.

Why: to a freshly initialised transformer, VQ codes are arbitrary ids. On
Shapes, MAGVLT learns from the caption where objects go within a few hundred
updates, but with the paper's random N(0, 0.02) embeddings it stays exactly at
chance on their colour for thousands of updates (p(right colour | object code)
0.167 after 3,000 updates; docs/results/magvlt-training.md, "Why colour was never learned"). Every
colour is spread over dozens of codes, and with unrelated random embeddings the
output head has no shared direction for "red codes" that the caption could
push along: a symmetric saddle that plain training leaves very slowly.

The VQ-GAN's codebook already places similar patches near each other (on
Shapes, a code's 5 nearest codebook neighbours share its colour 69% of the
time against 18% by chance). Adding a fixed random projection of the
standardised code vectors to the random init carries that geometry into the
transformer's (tied) code embeddings, and colour is read from the caption
within a hundred updates. The projection is orthonormal, so the added part of
the Gram matrix is exactly (scale * std)^2 * (dim / D) * C C^T for the
standardised codebook C of dimension D.

`scale` is the ratio of the added part's row norm to the random part's
(both about std * sqrt(width)); 0 keeps the paper's random init.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

INIT_STD = 0.02  # the random init of every embedding (sec. 4 of the paper; token_transformer.init_weights)


def tokenizer_code_vectors(tokenizers: Mapping[str, Any] | Iterable[Any] | None) -> dict[str, torch.Tensor]:
    """{modality: [K, D] code vectors} of the tokenizers that offer them (`code_vectors()`)."""
    if tokenizers is None:
        return {}
    found = tokenizers.values() if isinstance(tokenizers, Mapping) else tokenizers
    return {t.modality: t.code_vectors().detach().float().cpu() for t in found if callable(getattr(t, "code_vectors", None))}


def standardised(vectors: torch.Tensor) -> torch.Tensor:
    """Each dimension to mean 0, std 1 over the codes (a constant dimension stays 0)."""
    centred = vectors - vectors.mean(dim=0)
    return centred / vectors.std(dim=0).clamp(min=1e-8)


@torch.no_grad()
def add_code_vectors(rows: torch.Tensor, vectors: torch.Tensor, *, scale: float, where: str) -> None:
    """rows [K, W] += scale * std * sqrt(W / D) * standardised(vectors [K, D]) @ P, P [D, W] orthonormal rows.

    P is drawn from torch's global generator, so the model's seed fixes it.
    """
    if vectors.ndim != 2 or vectors.shape[0] != rows.shape[0]:
        raise ValueError(
            f"{where}: code vectors must be [{rows.shape[0]}, D] (one per code of the embedding table),"
            f" got {tuple(vectors.shape)}"
        )
    width, dim = rows.shape[1], vectors.shape[1]
    if dim > width:
        raise ValueError(f"{where}: code vectors of dimension {dim} do not fit embeddings of width {width}")
    projection = torch.linalg.qr(torch.randn(width, dim))[0].T  # [D, W], orthonormal rows
    added = standardised(vectors) @ projection * (scale * INIT_STD * (width / dim) ** 0.5)
    rows.add_(added.to(dtype=rows.dtype, device=rows.device))
