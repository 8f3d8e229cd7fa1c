"""The masked forward pass of a step, made once and shared by the objectives that read it.

Mask prediction trains on it; UnrollMask starts its second step from its
predictions. It lives in `StepInput.shared[SHARED_KEY]`.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from mmgen.batch import Segment
from mmgen.layout import Packed, pack
from mmgen.protocols import StepInput
from mmgen.task import Task
from mmgen.token_space import JointTokenSpace

from .masking import draw_positions, mask_ratio, uniform
from .task_layout import batch_segments, task_items

SHARED_KEY = "masked_forward"


@attrs.frozen(kw_only=True)
class MaskedForward:
    """Inputs and outputs of the masked forward pass.

    `segments`: ground truth of every modality in the sequence; `masks[m]` [B, L]
    its masked positions; `logits[m]` [N_m, V_m] at those positions in row-major
    order (sample, then position), as `tensor[masks[m]]` orders them.
    """

    packed: Packed
    hidden: torch.Tensor
    segments: dict[str, Segment]
    masks: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]


def masked_modalities(task: Task) -> tuple[str, ...]:
    """The target, and the context too when the task masks it (IT2IT), in sequence order."""
    return (*(task.context if task.mask_context else ()), *task.target)


def draw_task_masks(
    space: JointTokenSpace, task: Task, segments: dict[str, Segment], *, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """One r ~ U(0, 1) per sample, shared by every masked modality (IT2IT: image and text).

    Draw order (tests rely on it): r [B], then positions of each masked modality in sequence order.
    """
    first = segments[task.modalities[0]]
    r = uniform((first.batch_size,), generator=generator, device=first.tokens.device)
    return {
        m: draw_positions(segments[m].valid(), mask_ratio(space.space(m), r), generator=generator)
        for m in masked_modalities(task)
    }


def span_logits(
    model: Any, packed: Packed, hidden: torch.Tensor, masks: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Logits at the masked positions only: the output head never sees the rest."""
    result = {}
    for m, mask in masks.items():
        span = packed.span(m)
        result[m] = model.logits(hidden[:, span.start : span.stop][mask], m)
    return result


def masked_forward(model: Any, inputs: StepInput, *, space: JointTokenSpace) -> MaskedForward:
    """The step's masked forward pass: the cached one, or a new one (with gradients), cached."""
    cached = inputs.shared.get(SHARED_KEY)
    if cached is not None:
        return cached
    segments = batch_segments(inputs.task, inputs.batch)
    masks = draw_task_masks(space, inputs.task, segments, generator=inputs.generator)
    packed = pack(space, task_items(space, inputs.task, segments, masks=masks))
    hidden = model(packed)
    result = MaskedForward(
        packed=packed, hidden=hidden, segments=segments, masks=masks, logits=span_logits(model, packed, hidden, masks)
    )
    inputs.shared[SHARED_KEY] = result
    return result
