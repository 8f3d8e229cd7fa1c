"""L_UM: step-unrolled mask prediction (MAGVLT sec. 3.2, after SUNDAE, Savinov et al. 2022).

Training corrupts ground truth with masks; inference corrupts the model's own
partial predictions. So: take the mask forward's predictions for the masked
positions (no gradient through them), write them in, re-mask a subset of the
originally masked positions and train the model to predict the re-masked
tokens' ground truth given its own one-step predictions elsewhere.

Decisions the paper leaves open, each an option:
- `first_step`: "sample" (default; the samplers sample, so sampled fills are the
  corruption the model meets at test time; SUNDAE samples too) or "argmax".
- The first step's loss is L_mask itself, so it is not counted again here.
- `remask`: "random" (default; as the authors' helper: a uniformly random subset
  of the first mask, sized by a fresh r' ~ U(0, 1) through the modality's mask
  schedule, at least one token) or "low_confidence" (the same count, the
  first-step predictions with the lowest log-probability, as a MaskGIT sampler
  would re-mask).
- `loss_on`: "remasked" (default; the re-masked tokens) or "all_masked" (also the
  filled-in predictions, which the model then learns to correct, as SUNDAE's
  denoising loss does).
- `fraction`: the share of the batch (its first rows) that gets the second step,
  to trade this extra forward-backward for throughput.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import attrs
import torch
import torch.nn.functional as F

from mmgen.api import JointTokenSpace, ObjectiveOutput, Segment, StepInput, pack

from .masked_forward import MaskedForward, input_masks, masked_forward, span_logits
from .masked_loss import masked_cross_entropy
from .masking import draw_positions, mask_count, mask_ratio, uniform
from .task_layout import task_items


def first_step_tokens(
    logits: torch.Tensor, *, how: str, temperature: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted local ids [N] and their log-probabilities [N] from first-step logits [N, V]."""
    if how == "argmax":
        tokens = logits.argmax(dim=-1)
    else:
        # Gumbel-max draws from softmax(logits / T) with a generator on any device.
        u = uniform(tuple(logits.shape), generator=generator, device=logits.device).clamp_(1e-20, 1.0)
        tokens = (logits / temperature - torch.log(-torch.log(u))).argmax(dim=-1)
    log_probs = F.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
    return tokens, log_probs


def lowest_confidence(mask: torch.Tensor, confidence: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """[B, L]: in each row, the `count` masked positions with the lowest confidence."""
    scores = torch.full(mask.shape, math.inf, device=mask.device)
    scores[mask] = confidence.float()
    rank = scores.argsort(dim=1, stable=True).argsort(dim=1)
    return rank < count[:, None]


class UnrollMask:
    name: ClassVar[str] = "unroll_mask"

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 1.0
        label_smoothing: float = 0.1
        first_step: Literal["sample", "argmax"] = "sample"
        temperature: float = 1.0
        remask: Literal["random", "low_confidence"] = "random"
        loss_on: Literal["remasked", "all_masked"] = "remasked"
        fraction: float = 1.0

    @classmethod
    def from_config(cls, config: Config, *, token_space: JointTokenSpace, **_deps: Any) -> UnrollMask:
        return cls(token_space=token_space, **attrs.asdict(config))

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        weight: float = 1.0,
        label_smoothing: float = 0.1,
        first_step: str = "sample",
        temperature: float = 1.0,
        remask: str = "random",
        loss_on: str = "remasked",
        fraction: float = 1.0,
    ) -> None:
        if first_step not in ("sample", "argmax") or remask not in ("random", "low_confidence"):
            raise ValueError(f"unknown first_step {first_step!r} or remask {remask!r}")
        if loss_on not in ("remasked", "all_masked"):
            raise ValueError(f"unknown loss_on {loss_on!r}")
        if not 0.0 < fraction <= 1.0 or temperature <= 0.0:
            raise ValueError(f"fraction must be in (0, 1] and temperature > 0, got {fraction}, {temperature}")
        self.token_space = token_space
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.first_step = first_step
        self.temperature = temperature
        self.remask = remask
        self.loss_on = loss_on
        self.fraction = fraction

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        first = masked_forward(model, inputs, space=self.token_space)
        rows = math.ceil(self.fraction * inputs.batch.batch_size)
        with torch.no_grad():
            filled, remasks = self.unroll(first, rows=rows, generator=inputs.generator)
        # Rows whose context the first pass dropped (guidance training) keep it dropped here.
        dropped = {m: mask[:rows] for m, mask in first.dropped.items()}
        items = task_items(self.token_space, inputs.task, filled, masks=input_masks(remasks, dropped))
        packed = pack(self.token_space, items)
        hidden = model(packed)
        scored = remasks if self.loss_on == "remasked" else {m: first.masks[m][:rows] for m in remasks}
        logits = span_logits(model, packed, hidden, scored)
        targets = {m: first.segments[m].tokens[:rows][mask] for m, mask in scored.items()}
        loss, metrics = masked_cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return ObjectiveOutput(loss=loss, metrics=metrics)

    def unroll(
        self, first: MaskedForward, *, rows: int, generator: torch.Generator
    ) -> tuple[dict[str, Segment], dict[str, torch.Tensor]]:
        """The first `rows` samples with predictions written in, and the re-masked positions.

        Draw order: r' [rows]; then per masked modality in sequence order, the
        first-step samples (if sampling) and the re-mask positions (if random).
        """
        some = next(iter(first.masks.values()))
        r = uniform((rows,), generator=generator, device=some.device)
        filled = {m: seg.select(slice(0, rows)) for m, seg in first.segments.items()}
        remasks = {}
        for m, full_mask in first.masks.items():
            mask = full_mask[:rows]
            logits = first.logits[m][: int(mask.sum())].detach()
            tokens, log_probs = first_step_tokens(
                logits, how=self.first_step, temperature=self.temperature, generator=generator
            )
            segment = filled[m]
            filled[m] = Segment(modality=m, tokens=segment.tokens.masked_scatter(mask, tokens), lengths=segment.lengths)
            ratio = mask_ratio(self.token_space.space(m), r)
            if self.remask == "random":
                remasks[m] = draw_positions(mask, ratio, generator=generator)
            else:
                remasks[m] = lowest_confidence(mask, log_probs, mask_count(ratio, mask.sum(dim=1)))
        return filled, remasks
