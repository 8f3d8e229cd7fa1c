"""How generation runs, described once: the generate stage's Config extends it, `mmgen generate` structures it.

sampler: {use: maskgit, fixed: {steps: 10}}     # null: the model's default sampler
candidates: {t2i: 8, i2t: 32}                   # per task; more than one needs a reranker
rerank: {t2i: clip, i2t: {use: cycle}}          # per task: a registered reranker
refine: {i2t: {use: caption_refine}}            # per task: a registered refiner
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from ..config import Spec, component_map, optional_component, structure_spec
from ..validators import positive, positive_values


@attrs.frozen(kw_only=True)
class GenerateOptions:
    sampler: Spec | None = optional_component("samplers")
    candidates: dict[str, int] = attrs.field(factory=dict, validator=positive_values)
    rerank: dict[str, Spec] = component_map("rerankers")
    refine: dict[str, Spec] = component_map("refiners")
    seed: int | None = None  # None: the recipe's seed (0 on the command line)
    batch_size: int = attrs.field(default=16, validator=positive)

    def check_tasks(self, tasks: list[str]) -> None:
        """Each task listed once, options name only tasks that run, several candidates come with a reranker."""
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"each task may be listed once; got {tasks}")
        for option in ("candidates", "rerank", "refine"):
            unknown = sorted(set(getattr(self, option)) - set(tasks))
            if unknown:
                raise ValueError(f"{option} given for tasks not run: {unknown} (tasks: {tasks})")
        for task, count in self.candidates.items():
            if count > 1 and task not in self.rerank:
                raise ValueError(
                    f"candidates.{task} is {count}, so {task} needs a reranker to pick one: name it, e.g. clip"
                    f" (the paper's protocol): `rerank: {{{task}: clip}}` in a recipe, `--rerank clip` on the command line"
                )


@attrs.frozen(kw_only=True)
class TaskPlan:
    """One task with what the options choose for it, built."""

    task: Any
    candidates: int = 1
    reranker: Any = None
    refiner: Any = None


def build_sampler(options: GenerateOptions, *, model: Any, registry: Any) -> Any:
    """The options' sampler, or the model's default (its `default_sampler` name; `maskgit` if it names none)."""
    spec = options.sampler
    if spec is None:
        name = getattr(model, "default_sampler", "maskgit")
        spec = structure_spec("samplers", {"use": name}, path="sampler", registry=registry)
    return registry.build(spec)


def plan_tasks(
    options: GenerateOptions, tasks: list[Spec], *, registry: Any, deps: Mapping[str, Any]
) -> list[TaskPlan]:
    """Each task built, with its candidates, reranker and refiner; `deps` go to rerankers and refiners."""
    options.check_tasks([spec.use for spec in tasks])
    plans = []
    for spec in tasks:
        rerank, refine = options.rerank.get(spec.use), options.refine.get(spec.use)
        plans.append(
            TaskPlan(
                task=registry.build(spec),
                candidates=options.candidates.get(spec.use, 1),
                reranker=registry.build(rerank, **deps) if rerank is not None else None,
                refiner=registry.build(refine, **deps) if refine is not None else None,
            )
        )
    return plans
