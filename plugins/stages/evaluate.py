"""The `evaluate` recipe stage: every configured metric over each protocol's generations, side by side.

`evaluate` and `write_metrics` are what `mmgen eval` runs too, so a stage and the command give the
same numbers, keys and table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import attrs

from mmgen.api import Spec, StageContext, atomic_write_text, components, upstream

METRICS_FILE = "metrics.json"
TIMINGS_FILE = "timings.json"  # wall clock, kept apart: metrics.json is what a rerun reproduces byte for byte
RESULTS_FILE = "results.md"
TIME = "time"  # the group of each protocol's timings: <protocol>/time/<task>/candidates, .../seconds_per_output


class EvaluateStage:
    """Builds each metric with its dependencies (`inputs`: the stages it declares; `device`) and computes it
    over each generation protocol's generations (plugins/stages/protocol_runs.py). Logs
    `<protocol>/<metric>/<name>` and `<protocol>/time/<task>/candidates` to the tracker and metrics.json,
    `<protocol>/time/<task>/seconds_per_output` to the tracker and timings.json, and writes results.md:
    one row per task and value, one column per protocol, so one sample, the reranked best of N and
    refinement read side by side with what each costs.
    Generations without protocols (a list: an older generate folder) give `<metric>/<name>` keys."""

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
    def replay(cls, directory: Path, *, tracker: Any) -> None:
        """A run that finds this stage done still carries its results (a sweep's variant whose stages an earlier
        run finished): the metrics and timings as written, logged again."""
        for name in (METRICS_FILE, TIMINGS_FILE):
            path = Path(directory) / name
            if path.is_file():
                tracker.log_metrics(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def summary(cls, directory: Path) -> list[str]:
        results = Path(directory) / RESULTS_FILE
        if results.is_file():
            return results.read_text(encoding="utf-8").splitlines()
        return metrics_table(cls.load(directory))

    def run(self, ctx: StageContext) -> None:
        loaded = ctx.inputs.load(self.config.generations_stage)
        out = Path(ctx.out_dir)
        if not isinstance(loaded, Mapping):  # no protocols: one set of generations
            results = evaluate(loaded, self.config.metrics, registry=ctx.registry, inputs=ctx.inputs, device=ctx.device)
            write_metrics(results, out / METRICS_FILE, tracker=ctx.tracker)
            return
        results = evaluate_protocols(
            loaded, self.config.metrics, registry=ctx.registry, inputs=ctx.inputs, device=ctx.device
        )
        write_metrics(results, out / METRICS_FILE, tracker=ctx.tracker)
        seconds = protocol_seconds(loaded)
        write_metrics(seconds, out / TIMINGS_FILE, tracker=ctx.tracker)
        results_file = out / RESULTS_FILE
        table = protocol_table({**results, **seconds}, protocols=list(loaded))
        atomic_write_text(results_file, "\n".join(table) + "\n")
        ctx.tracker.log_artifact(results_file)


def evaluate_protocols(
    runs: Mapping[str, Any], metrics: Iterable[Spec], *, registry: Any, inputs: Any, device: str
) -> dict[str, float]:
    """Each metric (built once) over each protocol's generations, and each protocol's candidates per prompt:
    `<protocol>/<metric>/<name>` and `<protocol>/time/<task>/candidates` -> value."""
    built = [(spec.use, registry.build(spec, inputs=inputs, device=device)) for spec in metrics]
    results: dict[str, float] = {}
    for protocol, run in runs.items():
        for use, metric in built:
            for name, value in metric.compute(run.generations).items():
                results[f"{protocol}/{use}/{name}"] = float(value)
        for task, timing in run.timings.items():
            results[f"{protocol}/{TIME}/{task}/candidates"] = float(timing["candidates"])
    return results


def protocol_seconds(runs: Mapping[str, Any]) -> dict[str, float]:
    """Each protocol's wall clock per output, by task: `<protocol>/time/<task>/seconds_per_output` -> seconds."""
    return {
        f"{protocol}/{TIME}/{task}/seconds_per_output": float(timing["seconds_per_output"])
        for protocol, run in runs.items()
        for task, timing in run.timings.items()
    }


def protocol_table(results: Mapping[str, float], *, protocols: Sequence[str]) -> list[str]:
    """Markdown: a row per task and value (timings first, then metric by metric), a column per protocol;
    a protocol that did not run a task shows a dash."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in results.items():
        protocol, _, rest = key.partition("/")
        if protocol not in protocols:
            continue
        row = table_row(rest)
        rows.setdefault(row, {})[protocol] = value
    ordered = sorted(rows, key=lambda row: (row[0], row[1].split(" ")[0] != TIME, row[1]))
    lines = [f"| task | value | {' | '.join(protocols)} |", "|---|---|" + "---|" * len(protocols)]
    for row in ordered:
        cells = [shown(row[1], rows[row][p]) if p in rows[row] else "-" for p in protocols]
        lines.append(f"| {row[0]} | {row[1]} | {' | '.join(cells)} |")
    return lines


def table_row(rest: str) -> tuple[str, str]:
    """(task, what) of a key without its protocol: `shapes_accuracy/i2t/accuracy` -> (i2t, shapes_accuracy accuracy);
    `time/i2t/seconds_per_output` -> (i2t, time seconds_per_output); a metric value for all tasks -> (all, ...)."""
    parts = rest.split("/")
    if len(parts) >= 3:
        return parts[1], " ".join([parts[0], *parts[2:]])
    if len(parts) == 2:  # <metric>/<task or all>: one value per task (clip_score)
        return parts[1], parts[0]
    return "all", rest


def shown(what: str, value: float) -> str:
    if what.endswith(" n") or what.endswith(" candidates"):
        return f"{int(value)}"
    if what.endswith("seconds_per_output"):
        return f"{value:.3g}"
    return f"{value:.3f}" if math.isfinite(value) and abs(value) < 10 else f"{value:.1f}"


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
