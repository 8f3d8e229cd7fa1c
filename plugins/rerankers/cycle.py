"""Scoring a caption by how well the model's own T2I direction explains its image.

MAGVLT reranks I2T candidates with CLIP. One bidirectional model also knows the
reverse direction, and on Shapes it knows it far better: it draws the shape a
caption names (T2I shape 0.86) but names the shape it sees only about a third
of the time (I2T shape 0.36; docs/results/shapes.md, "I2T: the cycle reranker"). So a caption
is scored by log p(image tokens | caption): the image fully masked behind the
caption, one forward pass, the log-probability of every true image token
summed. A caption that misnames a shape, colour, size or cell, or leaves an
object out, predicts the wrong codes where that object is and scores lower.
This is a noisy-channel score (p(caption | image) is proportional to
p(image | caption) p(caption)); the caption prior is the sampler's and the
refinement's job (caption_refine.py), not this one's.

`passes` > 1 splits the image into that many interleaved sets (a checkerboard
for 2 on a grid: token (r, c) is in set (r + c) mod passes) and predicts each
set with the others visible, summing over the passes. Each token is then
scored against its neighbours as well as the caption, a sharper estimate of
log p(image | caption) at `passes` times the cost; measured on Shapes it puts
more captions right after refinement (docs/results/shapes.md, "I2T: the cycle reranker").
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import attrs
import torch

from mmgen.api import Segment, Task, pack, positive
from mmgen.objectives.task_layout import task_items


class CycleReranker:
    """Scores (image, caption) rows by log p(image | caption) under `model`; higher is a better match.

    `model` should be in eval mode (the generation pipeline puts it there);
    rows are scored `batch_size` at a time, each in `passes` forward passes.
    """

    name: ClassVar[str] = "cycle"

    @attrs.frozen(kw_only=True)
    class Config:
        passes: int = attrs.field(default=2, validator=positive)  # 1: the whole image at once; 2: a checkerboard, sharper
        image: str = "image"  # the modalities scored, by their names in the joint space
        text: str = "text"
        batch_size: int = attrs.field(default=256, validator=positive)

    @classmethod
    def from_config(cls, config: Config, *, model: Any, **_deps: Any) -> CycleReranker:
        return cls(
            model,
            passes=config.passes,
            image_modality=config.image,
            text_modality=config.text,
            batch_size=config.batch_size,
        )

    def __init__(
        self,
        model: Any,
        *,
        passes: int = 1,
        image_modality: str = "image",
        text_modality: str = "text",
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if passes < 1:
            raise ValueError(f"cycle score passes must be >= 1, got {passes}")
        self.model = model
        self.batch_size = batch_size
        self.image_modality = image_modality
        self.pass_of_token = interleaved_sets(model.token_space.space(image_modality).shape, passes=passes)
        self.passes = passes
        self.modalities = (image_modality, text_modality)
        # The T2I layout of training and sampling: [BOC] caption [BOG] image.
        self.task = Task(name="t2i", context=(text_modality,), target=(image_modality,))

    @torch.no_grad()
    def pair_scores(self, image: Segment, text: Segment) -> torch.Tensor:
        """[B] summed log-probability of row b's image tokens given row b's caption."""
        if image.batch_size != text.batch_size:
            raise ValueError(f"cycle score: {image.batch_size} images but {text.batch_size} captions")
        size = self.batch_size
        parts = [
            self._scores(image.select(slice(start, start + size)), text.select(slice(start, start + size)))
            for start in range(0, image.batch_size, size)
        ]
        return torch.cat(parts)

    def scores(self, segments: Mapping[str, Segment]) -> torch.Tensor:
        """[B] the Reranker interface: log p(image | caption) of each row's image and caption."""
        return self.pair_scores(*(segments[m] for m in self.modalities))

    def _scores(self, image: Segment, text: Segment) -> torch.Tensor:
        total = torch.zeros(image.batch_size, device=image.tokens.device)
        for part in range(self.passes):
            masked = image.valid() & (self.pass_of_token.to(image.tokens.device) == part)[None, :]
            segments = {self.image_modality: image, self.task.context[0]: text}
            items = task_items(self.model.token_space, self.task, segments, masks={self.image_modality: masked})
            packed = pack(self.model.token_space, items)
            span = packed.span(self.image_modality)
            hidden = self.model(packed)[:, span.start : span.stop]
            log_probs = self.model.logits(hidden, self.image_modality).float().log_softmax(dim=-1)
            true = log_probs.gather(-1, image.tokens[..., None])[..., 0]
            total += (true * masked).sum(dim=1)
        return total


def interleaved_sets(shape: tuple[int, ...], *, passes: int) -> torch.Tensor:
    """[prod(shape)] set index of each token: its coordinates summed, mod `passes` (2 on a grid: a checkerboard)."""
    coordinates = torch.stack(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"))
    return coordinates.sum(dim=0).flatten() % passes
