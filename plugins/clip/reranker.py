"""Best-of-N reranking by CLIP similarity (MAGVLT sec. 4.2: 32 candidates for T2I, 64 for I2T)."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import attrs
import torch

from mmgen.api import Segment, upstream

from .model import ClipModel


class ClipReranker:
    """Scores image-text pairs given as token segments by the clip stage's model; higher is a better match."""

    name: ClassVar[str] = "clip"

    @attrs.frozen(kw_only=True)
    class Config:
        clip_stage: str = upstream("clip")  # the stage that trained the CLIP model
        image: str = "image"  # the modalities scored, by their names in the joint space
        text: str = "text"

    @classmethod
    def from_config(cls, config: Config, *, inputs: Any, **_deps: Any) -> ClipReranker:
        return cls(inputs.load(config.clip_stage), image_modality=config.image, text_modality=config.text)

    def __init__(self, model: ClipModel, *, image_modality: str = "image", text_modality: str = "text") -> None:
        self.model = model.eval()
        self.modalities = (image_modality, text_modality)

    def scores(self, segments: Mapping[str, Segment]) -> torch.Tensor:
        """[B] the Reranker interface: cosine similarity of each row's image and text."""
        return self.pair_scores(*(segments[m] for m in self.modalities))

    @torch.no_grad()
    def pair_scores(self, image: Segment, text: Segment) -> torch.Tensor:
        """Cosine similarity [B] of row b's image and row b's text."""
        device = next(self.model.parameters()).device
        image_embedding = self.model.encode_image(image.tokens.to(device))
        text_embedding = self.model.encode_text(text.tokens.to(device), text.lengths.to(device))
        return (image_embedding * text_embedding).sum(dim=-1)
