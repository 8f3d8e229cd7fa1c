"""The training tasks and p_tau, the distribution one task per batch is drawn from (MAGVLT sec. 3.2)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np

from mmgen.api import Task


@attrs.frozen(kw_only=True)
class TaskConfig:
    """One task of a recipe: `[BOC] context [BOG] target`, drawn with probability ~ `weight`.

    `full_length`: texts train at their maximum length, end-of-text padding
    included (core Task.full_length): the length head then always says "all
    of it", and generation writes a text and its padding. For a text whose
    start is known (VQA's question), where the length head, which sees only
    what precedes the text, cannot know where the answer ends.

    `start_step` (not in MAGVLT, which mixes from the start) keeps the task out of
    the draw before that update: on a small budget, T2I learns where objects go
    several times sooner alone than mixed 8:1:1 with the text tasks
    (docs/results/magvlt-training.md, "Multitask slows T2I"), so a recipe can
    train T2I first and add I2T later.
    """

    context: tuple[str, ...] = ()
    target: tuple[str, ...]
    mask_context: bool = False
    full_length: bool = False
    weight: float = 1.0
    start_step: int = attrs.field(default=0)

    @start_step.validator
    def _non_negative(self, _attribute: attrs.Attribute, value: int) -> None:
        if value < 0:
            raise ValueError(f"start_step must be >= 0, got {value}")


def paper_tasks() -> dict[str, TaskConfig]:
    """T2I : I2T : IT2IT = 8 : 1 : 1, the authors' released configuration."""
    return {
        "t2i": TaskConfig(context=("text",), target=("image",), weight=8.0),
        "i2t": TaskConfig(context=("image",), target=("text",), weight=1.0),
        "it2it": TaskConfig(context=("image",), target=("text",), mask_context=True, weight=1.0),
    }


class TaskDraw:
    """The task of step `s`: a draw from p_tau seeded by (seed, s).

    Keyed by the step rather than a running generator, so every data-parallel
    rank trains the same task in a step and a resumed run draws the same tasks.
    """

    def __init__(self, tasks: Mapping[str, TaskConfig], *, seed: int) -> None:
        if not tasks:
            raise ValueError("at least one training task is needed")
        weights = np.array([t.weight for t in tasks.values()], dtype=float)
        if (weights < 0).any() or weights.sum() <= 0:
            given = {name: t.weight for name, t in tasks.items()}
            raise ValueError(f"task weights must be >= 0 and not all 0, got {given}")
        self.tasks = [
            Task(name=name, context=t.context, target=t.target, mask_context=t.mask_context, full_length=t.full_length)
            for name, t in tasks.items()
        ]
        self.weights = weights
        self.start_steps = np.array([t.start_step for t in tasks.values()])
        if not (weights * (self.start_steps == 0)).sum() > 0:
            raise ValueError("some task with weight > 0 must start at step 0 (start_step: 0)")
        self.seed = seed

    def __call__(self, step: int) -> Task:
        weights = np.where(self.start_steps <= step, self.weights, 0.0)
        index = np.random.default_rng([self.seed, step]).choice(len(self.tasks), p=weights / weights.sum())
        return self.tasks[int(index)]
