"""Classifier-free guidance: condition dropout in training, guided logits in sampling.

MAGVLT has no guidance; its masked-generation peers use it (Muse, arXiv
2301.00704; UniDisc), some with a scale that rises over the steps. Training
hides the whole context of a random share of rows behind MASK tokens, so one
model also learns the unconditional distribution; sampling runs a second,
unconditional pass (context replaced by MASK tokens) and extrapolates:
logits = cond + w (cond - uncond).
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch

from .batch import TokenBatch
from .task import Task


@attrs.frozen(kw_only=True)
class GuidanceOptions:
    """Guidance scale w and how it moves over the refinement steps.

    `constant`: w at every step. `linear`: w rises from 0 at the first step to
    `scale` at the last (early steps lay out freely, late steps follow the
    condition closely).
    """

    scale: float = 0.0
    schedule: Literal["constant", "linear"] = "constant"

    def __attrs_post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.scale}")


def guidance_weight(options: GuidanceOptions, *, step: int, steps: int) -> float:
    """w at refinement step `step` (0-based) of `steps`."""
    if options.schedule == "constant" or steps == 1:
        return options.scale
    return options.scale * step / (steps - 1)


def guide(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Guided logits; weight 0 returns `cond` itself (the unguided sampler)."""
    if weight == 0:
        return cond
    return cond + weight * (cond - uncond)


def drop_condition(batch: TokenBatch, task: Task, *, p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks that hide the whole context of a random share `p` of the rows.

    Returns, for every context modality of `task`, a bool [B, L] mask: True at
    every valid position of the rows drawn (each with probability `p`, one draw
    per row shared by all context modalities). OR it into the masks a training
    objective passes to `layout.pack` (`objectives.task_layout.task_items`
    takes masks by modality). Padding stays padding, so the unconditional
    branch at sampling (every valid context position MASK) matches training.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition dropout p must be in [0, 1], got {p}")
    both = set(task.context) & set(task.target)
    if both:
        raise ValueError(f"task {task.name!r}: {sorted(both)} is both context and target; cannot tell which to drop")
    device = batch.segments[0].tokens.device
    rows = torch.rand(batch.batch_size, generator=generator, device=generator.device).to(device) < p
    return {modality: batch.modality(modality).valid() & rows[:, None] for modality in task.context}
