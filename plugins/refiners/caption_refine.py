"""Cycle-checked caption refinement: word by word, keep the variant the image supports best.

An mmgen extension, not in MAGVLT. After reranking, the captions get
coordinate-ascent sweeps. At position i the captioner itself proposes:

- one word: the caption with i masked (image and the rest of the caption as
  context) gives p_i2t(token | ...); its `proposals` most likely tokens with at
  least `min_prob` probability are the alternatives (so the captioner keeps the
  grammar: a position it is sure of, like "in the", has no alternative);
- two words (`pair_distances`): i and i + d masked together, each taking one of
  its `pair_proposals` likeliest plausible tokens. Coupled words ("small
  triangle" for "large square") need this: each single change alone can score
  lower than the wrong pair.

Each variant is scored against the caption it would replace,

    log p(image | variant) - log p(image | caption)
      + prior_weight * (log p_i2t(new words) - log p_i2t(old words))

(the cycle score of cycle_score.py plus the captioner's own belief, both at the
changed positions), and the variant with the largest positive gain replaces
the caption. Only plausible variants are scored, so a sweep costs a few cycle
passes per caption position that is in doubt, not one per proposal. Lengths
never change; EOS is never proposed. A sweep that changes nothing ends the
search: the next would make the same choices.

On the Shapes run this turns best-of-32 captions with the right words for
colour and cell but the wrong shape into right ones (docs/results/shapes.md,
"I2T: the cycle reranker"). Without the prior term the score accepts
ungrammatical word salad that happens to fit the image codes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import attrs
import torch

from mmgen.api import Segment, Task, pack
from mmgen.objectives.task_layout import task_items
from mmgen.plugins.rerankers.cycle import CycleReranker

from .refine_config import RefineConfig


@attrs.frozen
class Variants:
    """Candidate captions: row r of the batch would become `tokens[k]`, its prior changed by `prior_gain[k]`."""

    rows: torch.Tensor  # [K] batch row each variant belongs to
    tokens: torch.Tensor  # [K, L]
    prior_gain: torch.Tensor  # [K] log p_i2t(new words) - log p_i2t(old words)


class CaptionRefiner:
    """Refines captions of images with one model (in eval mode): its I2T proposals, its T2I cycle score.

    `scorer` is the cycle score to climb (default: CycleReranker(model), one pass).
    """

    name: ClassVar[str] = "caption_refine"
    Config: ClassVar[type] = RefineConfig

    @classmethod
    def from_config(cls, config: RefineConfig, *, model: Any, **_deps: Any) -> CaptionRefiner:
        modalities = {"image_modality": config.image, "text_modality": config.text}
        return cls(model, config=config, scorer=CycleReranker(model, passes=config.passes, **modalities), **modalities)

    def __init__(
        self,
        model: Any,
        *,
        config: RefineConfig,
        scorer: CycleReranker | None = None,
        image_modality: str = "image",
        text_modality: str = "text",
    ) -> None:
        self.model = model
        self.config = config
        self.text_modality = text_modality
        self.image_modality = image_modality
        self.task = Task(name="i2t", context=(image_modality,), target=(text_modality,))
        self.modalities, self.refines = (image_modality, text_modality), (text_modality,)
        self.scorer = scorer or CycleReranker(model, image_modality=image_modality, text_modality=text_modality)
        self.eos_id = model.token_space.space(text_modality).eos_id

    def refine(self, inputs: Mapping[str, Segment], outputs: Mapping[str, Segment]) -> dict[str, Segment]:
        """The Refiner interface: the captions in `outputs` refined against the image (given or generated)."""
        image = outputs.get(self.image_modality, inputs.get(self.image_modality))
        if image is None or self.text_modality not in outputs:
            raise ValueError(f"caption refinement needs a generated {self.text_modality!r} and an {self.image_modality!r}")
        return {**outputs, self.text_modality: self.refine_captions(image, outputs[self.text_modality])}

    @torch.no_grad()
    def refine_captions(self, image: Segment, text: Segment) -> Segment:
        """Captions [B] of the same lengths; words change only where plausible variants score higher."""
        if image.batch_size != text.batch_size:
            raise ValueError(f"refine: {image.batch_size} images but {text.batch_size} captions")
        tokens = text.tokens.clone()
        content = self._content_lengths(text)
        longest = int(content.max().item()) if content.numel() else 0
        current = self.scorer.pair_scores(image, text)
        for _sweep in range(self.config.sweeps):
            changed = False
            for position in range(longest):
                variants = self._variants(image, tokens, text.lengths, position=position, content=content)
                changed |= self._accept(image, tokens, text.lengths, current, variants)
            if not changed:
                break
        return Segment(modality=text.modality, tokens=tokens, lengths=text.lengths)

    def _content_lengths(self, text: Segment) -> torch.Tensor:
        """Tokens before the EOS that ends each caption (EOS itself is never changed)."""
        lengths = text.lengths.clone()
        if self.eos_id is not None:
            last = text.tokens.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
            lengths -= ((lengths > 0) & (last == self.eos_id)).long()
        return lengths

    def _variants(
        self, image: Segment, tokens: torch.Tensor, lengths: torch.Tensor, *, position: int, content: torch.Tensor
    ) -> Variants:
        """Every plausible one-word change at `position` and two-word change at (position, position + d)."""
        config = self.config
        found = [self._changes(image, tokens, lengths, (position,), content=content, proposals=config.proposals)]
        for distance in config.pair_distances:
            if position + distance < tokens.shape[1]:
                pair = (position, position + distance)
                found.append(
                    self._changes(image, tokens, lengths, pair, content=content, proposals=config.pair_proposals)
                )
        return Variants(*(torch.cat(parts) for parts in zip(*(attrs.astuple(v, recurse=False) for v in found))))

    def _changes(
        self,
        image: Segment,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        positions: tuple[int, ...],
        *,
        content: torch.Tensor,
        proposals: int,
    ) -> Variants:
        """Variants changing every one of `positions` to one of its plausible proposals (all masked at once)."""
        log_probs = self._proposal_log_probs(image, tokens, lengths, positions)  # [B, P, V]
        if self.eos_id is not None:
            log_probs[..., self.eos_id] = float("-inf")
        old = tokens[:, list(positions)]  # [B, P]
        old_log_probs = log_probs.gather(2, old[..., None])[..., 0]
        top_log_probs, top_tokens = log_probs.topk(min(proposals, log_probs.shape[-1]), dim=-1)  # [B, P, k]
        plausible = (top_log_probs.exp() >= self.config.min_prob) & (top_tokens != old[..., None])
        plausible &= (content > max(positions))[:, None, None]
        # Cartesian product over the positions: [B, k, k, ...] of "all plausible" and prior gains.
        ok, gain = plausible[:, 0], top_log_probs[:, 0] - old_log_probs[:, :1]
        for p in range(1, len(positions)):
            ok = ok[..., None] & plausible[:, p].view(-1, *([1] * p), plausible.shape[-1])
            step = top_log_probs[:, p] - old_log_probs[:, p : p + 1]
            gain = gain[..., None] + step.view(-1, *([1] * p), step.shape[-1])
        index = ok.nonzero(as_tuple=True)  # (rows, choice at position 0, choice at 1, ...)
        rows = index[0]
        changed = tokens[rows].clone()
        for p, position in enumerate(positions):
            changed[:, position] = top_tokens[rows, p, index[p + 1]]
        return Variants(rows=rows, tokens=changed, prior_gain=gain[index])

    def _accept(
        self,
        image: Segment,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        current: torch.Tensor,
        variants: Variants,
    ) -> bool:
        """Replace each row's caption (and its cycle score in `current`) by its best variant, if that gains."""
        if variants.rows.numel() == 0:
            return False
        text = Segment(modality=self.text_modality, tokens=variants.tokens, lengths=lengths[variants.rows])
        cycle = self.scorer.pair_scores(image.select(variants.rows), text)
        gain = cycle - current[variants.rows] + self.config.prior_weight * variants.prior_gain
        best = torch.full_like(current, float("-inf")).scatter_reduce(0, variants.rows, gain, "amax")
        # Ties keep the first variant found (one-word changes before pairs, likelier proposals first).
        winners = ((gain == best[variants.rows]) & (gain > 0)).nonzero(as_tuple=True)[0]
        first = torch.full_like(current, len(gain), dtype=torch.long)
        first = first.scatter_reduce(0, variants.rows[winners], winners, "amin")
        rows = (first < len(gain)).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return False
        picked = first[rows]
        tokens[rows] = variants.tokens[picked]
        current[rows] = cycle[picked]
        return True

    def _proposal_log_probs(
        self, image: Segment, tokens: torch.Tensor, lengths: torch.Tensor, positions: tuple[int, ...]
    ) -> torch.Tensor:
        """log p_i2t(token at each of `positions` | image, the caption elsewhere): [B, len(positions), V]."""
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[:, list(positions)] = True
        text = Segment(modality=self.text_modality, tokens=tokens, lengths=lengths)
        segments = {self.image_modality: image, self.text_modality: text}
        items = task_items(self.model.token_space, self.task, segments, masks={self.text_modality: mask})
        packed = pack(self.model.token_space, items)
        span = packed.span(self.text_modality)
        hidden = self.model(packed)[:, [span.start + p for p in positions]]
        return self.model.logits(hidden, self.text_modality).float().log_softmax(dim=-1)
