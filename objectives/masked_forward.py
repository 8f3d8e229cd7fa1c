"""The masked forward pass of a step, made once and shared by the objectives that read it.

Mask prediction trains on it; UnrollMask starts its second step from its
predictions. It lives in `StepInput.shared[SHARED_KEY]`.

Condition dropout (for classifier-free guidance, see
`mmgen.api.drop_condition`): with probability
`StepInput.shared[CONDITION_DROPOUT_KEY]` (set by `TrainingLoss`; absent = 0) a
row's whole context is shown as MASK tokens. Only the input changes: the
dropped positions are no prediction targets, padding stays padding, and the
target is never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from mmgen.api import JointTokenSpace, Packed, Segment, StepInput, Task, drop_condition, pack

from .masking import draw_positions, mask_ratio, uniform
from .task_layout import batch_segments, task_items

SHARED_KEY = "masked_forward"
CONDITION_DROPOUT_KEY = "condition_dropout"


@attrs.frozen(kw_only=True)
class MaskedForward:
    """Inputs and outputs of the masked forward pass.

    `segments`: ground truth of every modality in the sequence; `masks[m]` [B, L]
    its masked positions; `logits[m]` [N_m, V_m] at those positions in row-major
    order (sample, then position), as `tensor[masks[m]]` orders them.
    `dropped[m]` [B, L]: context positions hidden by condition dropout (input
    only; no loss there); empty when nothing was dropped.
    """

    packed: Packed
    hidden: torch.Tensor
    segments: dict[str, Segment]
    masks: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    dropped: dict[str, torch.Tensor] = attrs.field(factory=dict)


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


def drop_context(inputs: StepInput) -> dict[str, torch.Tensor]:
    """Condition dropout's hidden context positions; draws nothing when p is 0 or the task has no context."""
    p = float(inputs.shared.get(CONDITION_DROPOUT_KEY, 0.0))
    if p == 0.0 or not inputs.task.context:
        return {}
    return drop_condition(inputs.batch, inputs.task, p=p, generator=inputs.generator)


def input_masks(masks: Mapping[str, torch.Tensor], dropped: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The positions `pack` shows as MASK: the masked ones and the dropped context (same rows in both)."""
    combined = dict(masks)
    for m, hidden in dropped.items():
        combined[m] = combined[m] | hidden if m in combined else hidden
    return combined


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
    # Drawn after the masks, so the masks of a seed do not depend on the dropout rate.
    dropped = drop_context(inputs)
    packed = pack(space, task_items(space, inputs.task, segments, masks=input_masks(masks, dropped)))
    hidden = model(packed)
    result = MaskedForward(
        packed=packed,
        hidden=hidden,
        segments=segments,
        masks=masks,
        logits=span_logits(model, packed, hidden, masks),
        dropped=dropped,
    )
    inputs.shared[SHARED_KEY] = result
    return result
