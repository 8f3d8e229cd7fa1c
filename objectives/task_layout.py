"""The sequence of a training task: `[BOC] context... [BOG] target...` (MAGVLT sec. 3.1)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mmgen.api import JointTokenSpace, Part, Segment, Task, TokenBatch


def task_items(
    space: JointTokenSpace,
    task: Task,
    segments: Mapping[str, Segment],
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    predict_length: bool = False,
) -> list[str | Part]:
    """Items for `mmgen.layout.pack`; `masks` maps a modality to its [B, L] masked positions.

    Full attention everywhere, as in the sampler's refinement passes;
    `predict_length` lets a length query see only what precedes it.
    """
    masks = masks or {}
    items: list[str | Part] = ["BOC"]
    items += [Part(segment=segments[m], mask=masks.get(m)) for m in task.context]
    items.append("BOG")
    items += [
        Part(segment=segments[m], mask=masks.get(m), predict_length=predict_length and space.space(m).variable_length)
        for m in task.target
    ]
    return items


def batch_segments(task: Task, batch: TokenBatch) -> dict[str, Segment]:
    """The batch's segment of every modality the task uses (with `full_length`, padding counted as tokens)."""
    segments = {m: batch.modality(m) for m in task.modalities}
    if task.full_length:
        segments = {m: Segment.full(m, s.tokens) for m, s in segments.items()}
    return segments
