"""The training tasks and p_tau, the distribution one task per batch is drawn from (MAGVLT sec. 3.2)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np

from mmgen.task import Task


@attrs.frozen(kw_only=True)
class TaskConfig:
    """One task of a recipe: `[BOC] context [BOG] target`, drawn with probability ~ `weight`."""

    context: tuple[str, ...] = ()
    target: tuple[str, ...]
    mask_context: bool = False
    weight: float = 1.0


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
            Task(name=name, context=t.context, target=t.target, mask_context=t.mask_context)
            for name, t in tasks.items()
        ]
        self.probabilities = weights / weights.sum()
        self.seed = seed

    def __call__(self, step: int) -> Task:
        index = np.random.default_rng([self.seed, step]).choice(len(self.tasks), p=self.probabilities)
        return self.tasks[int(index)]
