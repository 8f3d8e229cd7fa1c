"""The `evaluate` recipe stage: every configured metric over the generate stage's generations.

`evaluate` and `write_metrics` are what `mmgen eval` runs too, so a stage and the command give the
same numbers, keys and table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import attrs

from mmgen.api import Spec, StageContext, atomic_write_text, components, upstream

METRICS_FILE = "metrics.json"


class EvaluateStage:
    """Builds each metric with its dependencies (`inputs`: the stages it declares; `device`), computes it
    over the generations, logs `<metric>/<name>` to the tracker and writes metrics.json."""

    name: ClassVar[str] = "evaluate"

    @attrs.frozen(kw_only=True)
    class Config:
        metrics: tuple[Spec, ...] = components("metrics")
        generations_stage: str = upstream("generate")

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> EvaluateStage:
        return cls(config)

    @classmethod
    def load(cls, directory: Path, **_: Any) -> dict[str, float]:
        """The metrics, as written."""
        return json.loads((Path(directory) / METRICS_FILE).read_text(encoding="utf-8"))

    @classmethod
    def summary(cls, directory: Path) -> list[str]:
        return metrics_table(cls.load(directory))

    def run(self, ctx: StageContext) -> None:
        generations = ctx.inputs.load(self.config.generations_stage)
        results = evaluate(
            generations, self.config.metrics, registry=ctx.registry, inputs=ctx.inputs, device=ctx.device
        )
        write_metrics(results, Path(ctx.out_dir) / METRICS_FILE, tracker=ctx.tracker)


def evaluate(
    generations: Sequence[Any], metrics: Iterable[Spec], *, registry: Any, inputs: Any, device: str
) -> dict[str, float]:
    """Each metric (built with its deps `inputs` and `device`) over the generations: `<metric>/<name>` -> value."""
    results: dict[str, float] = {}
    for spec in metrics:
        metric = registry.build(spec, inputs=inputs, device=device)
        for name, value in metric.compute(generations).items():
            results[f"{spec.use}/{name}"] = float(value)
    return results


def write_metrics(results: dict[str, float], path: Path, *, tracker: Any) -> None:
    """The results as JSON at `path`, logged to the tracker as metrics and the file as an artefact."""
    tracker.log_metrics(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True))
    tracker.log_artifact(path)


def metrics_table(results: dict[str, float]) -> list[str]:
    """Metrics grouped by everything before their last `/` (metric and task), one line per group."""
    groups: dict[str, list[str]] = {}
    for key in sorted(results):
        group, _, name = key.rpartition("/")
        value = results[key]
        shown = f"{int(value)}" if name == "n" else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        groups.setdefault(group or key, []).append(f"{name} {shown}")
    width = max(len(g) for g in groups) if groups else 0
    return [f"{group:<{width}}  {'  '.join(values)}" for group, values in groups.items()]
