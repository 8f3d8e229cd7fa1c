"""Best-of-N reranking by CLIP similarity (MAGVLT: 32 candidates for T2I, 64 for I2T)."""

from __future__ import annotations

import torch

from mmgen.batch import Segment

from .model import ClipModel


class ClipReranker:
    """Scores image-text pairs given as token segments; higher is a better match."""

    def __init__(self, model: ClipModel) -> None:
        self.model = model.eval()

    @torch.no_grad()
    def scores(self, image: Segment, text: Segment) -> torch.Tensor:
        """Cosine similarity [B] of row b's image and row b's text."""
        device = next(self.model.parameters()).device
        image_embedding = self.model.encode_image(image.tokens.to(device))
        text_embedding = self.model.encode_text(text.tokens.to(device), text.lengths.to(device))
        return (image_embedding * text_embedding).sum(dim=-1)

    def best(self, image: Segment, text: Segment, *, candidates: int) -> torch.Tensor:
        """For rows grouped in consecutive runs of `candidates`, the row index of each group's best pair."""
        return best_in_groups(self.scores(image, text), candidates=candidates)


def best_in_groups(scores: torch.Tensor, *, candidates: int) -> torch.Tensor:
    """Row index of the highest score in each consecutive group of `candidates` rows."""
    if scores.shape[0] % candidates:
        raise ValueError(f"{scores.shape[0]} rows do not split into groups of {candidates} candidates")
    starts = torch.arange(0, scores.shape[0], candidates, device=scores.device)
    return scores.view(-1, candidates).argmax(dim=1) + starts
