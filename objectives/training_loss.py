"""The whole training loss: L_tau = sum of weight * objective for the step's task tau (MAGVLT sec. 3.2).

With the paper's objectives and weights: L_mask + 0.01 L_TL + 1.0 L_UM + 0.5 L_MS.
`condition_dropout` (not in MAGVLT; for classifier-free guidance) hides the whole
context of that share of rows in the masked forward pass (see masked_forward.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmgen.api import ObjectiveOutput, StepInput, TokenBatch

from .masked_forward import CONDITION_DROPOUT_KEY
from .tasks import TaskDraw


class TrainingLoss:
    """`loss_fn(module, batch, step, generator)` for `mmgen.trainer.Trainer.fit`."""

    def __init__(self, objectives: Sequence[Any], tasks: TaskDraw, *, condition_dropout: float = 0.0) -> None:
        if not objectives:
            raise ValueError("at least one objective is needed")
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], got {condition_dropout}")
        self.objectives = list(objectives)
        self.tasks = tasks
        self.condition_dropout = condition_dropout

    def __call__(self, module: Any, batch: TokenBatch, step: int, generator: torch.Generator) -> ObjectiveOutput:
        device = next(module.parameters()).device
        task = self.tasks(step)
        inputs = StepInput(
            batch=batch.to(device),
            task=task,
            generator=generator,
            step=step,
            shared={CONDITION_DROPOUT_KEY: self.condition_dropout},
        )
        total = torch.zeros((), device=device)
        # `tokens` (summed by the trainer) gives its tokens/s: the batch's non-padding tokens.
        metrics: dict[str, float] = {"tokens": float(sum(int(s.lengths.sum()) for s in batch.segments))}
        for objective in self.objectives:
            out = objective(module, inputs)
            total = total + objective.weight * out.loss
            metrics[f"{objective.name}/loss"] = float(out.loss.detach())
            metrics.update({f"{objective.name}/{key}": value for key, value in out.metrics.items()})
        return ObjectiveOutput(loss=total, metrics=metrics)
