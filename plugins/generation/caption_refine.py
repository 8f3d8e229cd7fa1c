"""Cycle-checked caption refinement: word by word, keep the variant the image supports best.

An mmgen extension, not in MAGVLT. After reranking, each caption gets a few
coordinate-ascent sweeps. At position i the captioner itself proposes: the
caption with i masked (image and the rest of the caption as context) gives
p_i2t(token | ...), and its `proposals` most likely tokens with at least
`min_prob` probability are the alternatives (so the captioner keeps the
grammar: a position it is sure of, like "in the", has no alternative). Each
variant is scored

    log p(image | caption)  +  prior_weight * log p_i2t(token at i | image, rest)

(the cycle score of cycle_score.py plus the captioner's own belief), and the
best replaces the caption. Lengths never change; EOS is never proposed.

On the Shapes run this turns best-of-32 captions with the right words for
colour and cell but the wrong shape into right ones (README, "I2T: the cycle
reranker"). Without the prior term the score accepts ungrammatical word salad
that happens to fit the image codes.
"""

from __future__ import annotations

from typing import Any

import torch

from mmgen.batch import Segment
from mmgen.layout import pack
from mmgen.objectives.task_layout import task_items
from mmgen.task import Task

from .cycle_score import CycleReranker
from .refine_config import RefineConfig


class CaptionRefiner:
    """Refines captions of images with one model (in eval mode): its I2T proposals, its T2I cycle score."""

    def __init__(
        self, model: Any, *, config: RefineConfig, image_modality: str = "image", text_modality: str = "text"
    ) -> None:
        self.model = model
        self.config = config
        self.text_modality = text_modality
        self.image_modality = image_modality
        self.task = Task(name="i2t", context=(image_modality,), target=(text_modality,))
        self.scorer = CycleReranker(model, image_modality=image_modality, text_modality=text_modality)
        self.eos_id = model.token_space.space(text_modality).eos_id

    @torch.no_grad()
    def refine(self, image: Segment, text: Segment) -> Segment:
        """Captions [B] of the same lengths; a word changes only when a plausible alternative scores higher."""
        if image.batch_size != text.batch_size:
            raise ValueError(f"refine: {image.batch_size} images but {text.batch_size} captions")
        content = self._content_lengths(text)
        longest = int(content.max().item()) if content.numel() else 0
        for _sweep in range(self.config.sweeps):
            for position in range(longest):
                text = self._step(image, text, position=position, live=content > position)
        return text

    def _content_lengths(self, text: Segment) -> torch.Tensor:
        """Tokens before the EOS that ends each caption (EOS itself is never changed)."""
        lengths = text.lengths.clone()
        if self.eos_id is not None:
            last = text.tokens.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
            lengths -= ((lengths > 0) & (last == self.eos_id)).long()
        return lengths

    def _step(self, image: Segment, text: Segment, *, position: int, live: torch.Tensor) -> Segment:
        rows = text.batch_size
        prior = self._proposal_log_probs(image, text, position)  # [B, V]
        if self.eos_id is not None:
            prior[:, self.eos_id] = float("-inf")
        top_log_probs, top_tokens = prior.topk(min(self.config.proposals, prior.shape[1]), dim=-1)
        current = text.tokens[:, position : position + 1]
        tokens = torch.cat([current, top_tokens], dim=1)  # [B, 1 + P]; column 0 keeps the caption
        log_probs = torch.cat([prior.gather(1, current), top_log_probs], dim=1)
        plausible = top_log_probs.exp() >= self.config.min_prob
        allowed = torch.cat([torch.ones_like(current, dtype=torch.bool), plausible], dim=1)
        allowed &= live[:, None] | (torch.arange(tokens.shape[1], device=tokens.device) == 0)[None, :]
        variants = text.tokens[:, None, :].repeat(1, tokens.shape[1], 1)
        variants[:, :, position] = tokens
        flat = Segment(
            modality=text.modality,
            tokens=variants.view(-1, variants.shape[-1]),
            lengths=text.lengths.repeat_interleave(tokens.shape[1]),
        )
        images = image.select(torch.arange(rows, device=tokens.device).repeat_interleave(tokens.shape[1]))
        # Variants equal to the caption (a proposal that is the current token) tie with column 0 and lose.
        score = self.scorer.scores(images, flat).view(rows, -1) + self.config.prior_weight * log_probs
        choice = score.masked_fill(~allowed, float("-inf")).argmax(dim=1)
        picked = variants[torch.arange(rows, device=tokens.device), choice]
        return Segment(modality=text.modality, tokens=picked, lengths=text.lengths)

    def _proposal_log_probs(self, image: Segment, text: Segment, position: int) -> torch.Tensor:
        """log p_i2t(token at `position` | image, the caption elsewhere): [B, V] over the text vocabulary."""
        mask = torch.zeros_like(text.tokens, dtype=torch.bool)
        mask[:, position] = True
        segments = {self.image_modality: image, self.text_modality: text}
        items = task_items(self.model.token_space, self.task, segments, masks={self.text_modality: mask})
        packed = pack(self.model.token_space, items)
        span = packed.span(self.text_modality)
        hidden = self.model(packed)[:, span.start + position]
        return self.model.logits(hidden[:, None], self.text_modality)[:, 0].float().log_softmax(dim=-1)
