"""L_TL: the target length from the BEGIN state of a variable-length target (MAGVLT sec. 3.2).

Class k means length k + 1 (the caption including its end-of-text).

The state must not depend on the target. `Part(predict_length=True)` stops the
BEGIN query from attending to the target, but in a deeper model the context
tokens it reads have themselves attended to the target (and the count of
non-padding target keys gives the length away). So the length is read from its
own view of the sequence: the context as given, every target token masked and
no target padding visible, which is exactly what I2T inference sees before it
knows the length. Only I2T and IT2IT batches (a text target) pay for this pass;
`fraction` runs it on the first rows of the batch only.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F

from mmgen.api import JointTokenSpace, ObjectiveOutput, Packed, Segment, StepInput, Task, pack

from .masked_forward import SHARED_KEY
from .task_layout import batch_segments, task_items


def length_view(space: JointTokenSpace, task: Task, segments: dict[str, Segment]) -> Packed:
    """The sequence a length query reads: every target token masked, no target padding."""
    blind = {m: Segment.full(m, segments[m].tokens) for m in task.target}
    masks = {m: torch.ones_like(segments[m].tokens, dtype=torch.bool) for m in task.target}
    return pack(space, task_items(space, task, {**segments, **blind}, masks=masks, predict_length=True))


class TargetLength:
    name: ClassVar[str] = "target_length"

    @attrs.frozen(kw_only=True)
    class Config:
        weight: float = 0.01
        fraction: float = 1.0  # the share of the batch (its first rows) whose length is predicted

    @classmethod
    def from_config(cls, config: Config, *, token_space: JointTokenSpace, **_deps: Any) -> TargetLength:
        return cls(token_space=token_space, weight=config.weight, fraction=config.fraction)

    def __init__(self, *, token_space: JointTokenSpace, weight: float = 0.01, fraction: float = 1.0) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.token_space = token_space
        self.weight = weight
        self.fraction = fraction

    def variable_targets(self, task: Task) -> tuple[str, ...]:
        return tuple(m for m in task.target if self.token_space.space(m).variable_length)

    def __call__(self, model: Any, inputs: StepInput) -> ObjectiveOutput:
        targets = self.variable_targets(inputs.task)
        if not targets:
            return ObjectiveOutput(loss=self._idle_loss(model, inputs))
        rows = math.ceil(self.fraction * inputs.batch.batch_size)
        segments = batch_segments(inputs.task, inputs.batch.select(slice(0, rows)))
        packed = length_view(self.token_space, inputs.task, segments)
        hidden = model(packed)
        losses, correct, error, count = [], 0, 0.0, 0
        for m in targets:
            logits = model.length_logits(hidden[:, packed.span(m).begin], m)
            classes = (segments[m].lengths - 1).clamp(0, logits.shape[-1] - 1)
            losses.append(F.cross_entropy(logits, classes, reduction="sum"))
            with torch.no_grad():
                predicted = logits.argmax(dim=-1)
                correct += int((predicted == classes).sum())
                error += float((predicted - classes).abs().sum())
                count += classes.numel()
        loss = torch.stack(losses).sum() / count
        return ObjectiveOutput(loss=loss, metrics={"accuracy": correct / count, "abs_error": error / count})

    def _idle_loss(self, model: Any, inputs: StepInput) -> torch.Tensor:
        """Zero that still reaches every length head, so data-parallel reduction sees them each step."""
        forward = inputs.shared.get(SHARED_KEY)
        if forward is None:
            return torch.zeros(())
        state = forward.hidden[:, 0].detach()
        heads = [m for m in self.token_space.modalities if self.token_space.space(m).variable_length]
        return sum(0.0 * model.length_logits(state, m).sum() for m in heads) if heads else torch.zeros(())
