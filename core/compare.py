"""A sweep's child runs read back from MLflow, grouped by variant, with mean, std and n over seeds.

A sweep (issue 20) is one MLflow parent run whose children are its variants' runs, one per seed, all in the
parent's experiment. Each child carries its variant's group name (`mmgen.variant`), its seed and the JSON of
every varied recipe key (`mmgen.sweep.key.<dot path>`). Only finished children enter the statistics; failed
ones are counted, so a variant that fails often cannot look good on its lucky seeds.

mlflow is imported inside the functions that talk to a store: `mmgen --help` does not pay for it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .errors import UserError

SWEEP_TAG = "mmgen.sweep"
VARIANT_TAG = "mmgen.variant"
VARIANT_NAME_TAG = "mmgen.variant.name"
SEED_TAG = "mmgen.seed"
KEYS_TAG = "mmgen.sweep.keys"
KEY_TAG_PREFIX = "mmgen.sweep.key."
ERROR_TAG = "mmgen.error"
PARENT_TAG = "mlflow.parentRunId"
DEFAULT_CURVE = "train/loss"
FINISHED = "FINISHED"
FAILED = ("FAILED", "KILLED")  # both ended without a result
PAGE_SIZE = 1000


@attrs.frozen(kw_only=True)
class Child:
    run_id: str
    variant: str
    name: str  # the unique full name, e.g. "mask_only/seed=1"
    seed: str
    status: str
    start_time: int
    metrics: Mapping[str, float]  # each metric's last logged value
    keys: Mapping[str, str]  # varied recipe key (dot path) -> JSON text of its value
    error: str = ""

    @property
    def label(self) -> str:
        """What names this child's value among its variant's: its seed, or its run id without a seed axis."""
        return self.seed or self.run_id


@attrs.frozen(kw_only=True)
class Sweep:
    parent_id: str
    experiment_id: str
    experiment: str
    key_order: tuple[str, ...]  # the parent's `mmgen.sweep.keys`, the order a person wrote them in
    children: tuple[Child, ...]  # by start time: the sweep's order


@attrs.frozen(kw_only=True)
class Stat:
    """One metric over one variant's finished seeds."""

    values: Mapping[str, float]  # child label (seed) -> last value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None for fewer than two seeds, where it says nothing."""
        return statistics.stdev(self.values.values()) if self.n > 1 else None


@attrs.frozen(kw_only=True)
class Group:
    variant: str
    keys: Mapping[str, str]  # varied key -> JSON text, the same for all its seeds
    finished: int
    failed: int
    running: int
    stats: Mapping[str, Stat]  # metric -> statistics, in the order the metrics were chosen


@attrs.frozen(kw_only=True)
class Curve:
    """One variant's metric history averaged over its finished seeds at each step."""

    variant: str
    steps: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]  # NaN where fewer than two seeds logged that step


def resolve_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's default store (mlflow.db in the working folder),
    as the MLflow tracker resolves it when a run is recorded."""
    if tracking_uri:
        return tracking_uri
    import mlflow

    return mlflow.get_tracking_uri()  # reads MLFLOW_TRACKING_URI itself


def open_client(uri: str) -> Any:
    """A client of the store at `uri`; a local SQLite file that is not there is an error, not a new empty store."""
    prefix = "sqlite:///"
    database = uri[len(prefix) :].split("?")[0] if uri.startswith(prefix) else ""
    if database and database != ":memory:" and not Path(database).is_file():
        raise UserError(f"no MLflow store at {database}: give --tracking-uri or set MLFLOW_TRACKING_URI")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def find_parent(client: Any, target: str, *, uri: str) -> Any:
    """The parent run `target` names: a run id, or an experiment whose newest sweep parent is meant."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(target)
    if experiment is not None:
        found = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{SWEEP_TAG}` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise UserError(f"experiment {target!r} in {uri} has no sweep (no run tagged {SWEEP_TAG}=parent)")
        return found[0]
    try:
        return client.get_run(target)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    raise UserError(f"{target!r} is neither a run id nor an experiment name in {uri}")


def load_sweep(client: Any, target: str, *, uri: str) -> Sweep:
    parent = find_parent(client, target, uri=uri)
    parent_id, experiment_id = parent.info.run_id, parent.info.experiment_id
    runs = search_children(client, experiment_id, parent_id)
    if not runs:
        raise UserError(f"run {parent_id} has no child runs: give a sweep's parent run or its experiment's name")
    # Python's sort is stable: children started in the same millisecond keep the store's order.
    children = sorted((child_of(run) for run in runs), key=lambda child: child.start_time)
    return Sweep(
        parent_id=parent_id,
        experiment_id=experiment_id,
        experiment=client.get_experiment(experiment_id).name,
        key_order=tuple(json.loads(parent.data.tags.get(KEYS_TAG, "[]"))),
        children=tuple(children),
    )


def search_children(client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=PAGE_SIZE,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def child_of(run: Any) -> Child:
    tags = run.data.tags
    return Child(
        run_id=run.info.run_id,
        variant=tags.get(VARIANT_TAG) or run.info.run_name or run.info.run_id,
        name=tags.get(VARIANT_NAME_TAG) or run.info.run_name or run.info.run_id,
        seed=tags.get(SEED_TAG, ""),
        status=run.info.status,
        start_time=run.info.start_time or 0,
        metrics=dict(run.data.metrics),
        keys={key[len(KEY_TAG_PREFIX) :]: value for key, value in tags.items() if key.startswith(KEY_TAG_PREFIX)},
        error=tags.get(ERROR_TAG, ""),
    )


def finished(children: Sequence[Child]) -> list[Child]:
    return [child for child in children if child.status == FINISHED]


def select_metrics(sweep: Sweep, patterns: Sequence[str]) -> list[str]:
    """The metrics to compare: those matching the shell-style `patterns`, in pattern order; by default every
    `evaluate/...` metric all finished children have (else all they have), stage timings left out."""
    done = finished(sweep.children)
    known = sorted({key for child in done for key in child.metrics})
    if patterns:
        chosen: list[str] = []
        for pattern in patterns:
            matched = fnmatch.filter(known, pattern)
            if not matched:
                raise UserError(
                    f"--metric {pattern!r} matches no metric of a finished child; they have: {listing(known)}"
                )
            chosen += [key for key in matched if key not in chosen]
        return chosen
    common = sorted(set.intersection(*(set(child.metrics) for child in done))) if done else []
    results = [key for key in common if not fnmatch.fnmatchcase(key, "*/seconds")]  # every stage logs its time
    chosen = [key for key in results if key.startswith("evaluate/")] or results
    if not chosen:
        counts = f"{len(done)} of {len(sweep.children)} children finished"
        raise UserError(f"run {sweep.parent_id}: no metric that every finished child has to compare ({counts})")
    return chosen


def listing(keys: Sequence[str], *, most: int = 8) -> str:
    shown = ", ".join(keys[:most]) or "(none)"
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > most else shown


def variants(children: Sequence[Child]) -> list[str]:
    """Variant names in order of first appearance among the children (which come sorted by start time)."""
    return list(dict.fromkeys(child.variant for child in children))


def group_children(sweep: Sweep, metrics: Sequence[str]) -> list[Group]:
    shown = shown_keys(sweep)
    groups = []
    for variant in variants(sweep.children):
        members = [child for child in sweep.children if child.variant == variant]
        done = finished(members)
        stats = {
            metric: Stat(values={child.label: child.metrics[metric] for child in done if metric in child.metrics})
            for metric in metrics
        }
        groups.append(
            Group(
                variant=variant,
                keys={key: members[0].keys[key] for key in shown if key in members[0].keys},
                finished=len(done),
                failed=sum(child.status in FAILED for child in members),
                running=sum(child.status not in (FINISHED, *FAILED) for child in members),
                stats=stats,
            )
        )
    return groups


def shown_keys(sweep: Sweep) -> list[str]:
    """The varied keys that describe a variant: those with one value across its seeds. A key that varies
    within a variant is its seed axis, already in the seed column."""
    found = list(sweep.key_order) + sorted(
        {key for child in sweep.children for key in child.keys} - set(sweep.key_order)
    )
    return [
        key
        for key in found
        if all(
            len({child.keys.get(key) for child in sweep.children if child.variant == v}) == 1
            for v in variants(sweep.children)
        )
    ]


def choose_curve(sweep: Sweep, requested: str | None) -> str | None:
    """The metric drawn against steps: --curve, else train/loss where the finished children logged it."""
    logged = {key for child in finished(sweep.children) for key in child.metrics}
    if requested is None:
        return DEFAULT_CURVE if DEFAULT_CURVE in logged else None
    if requested not in logged:
        raise UserError(f"--curve {requested!r}: no finished child logged it; they have: {listing(sorted(logged))}")
    return requested


def load_curves(client: Any, sweep: Sweep, metric: str) -> list[Curve]:
    curves = []
    for variant in variants(sweep.children):
        histories = [
            history(client, child.run_id, metric)
            for child in finished(sweep.children)
            if child.variant == variant and metric in child.metrics
        ]
        if histories:
            curves.append(average_curve(variant, histories))
    return curves


def history(client: Any, run_id: str, metric: str) -> dict[int, float]:
    """step -> value; a step logged twice (a resumed run) keeps its later value."""
    points = sorted(client.get_metric_history(run_id, metric), key=lambda point: (point.timestamp, point.step))
    return {point.step: point.value for point in points}


def average_curve(variant: str, histories: Sequence[Mapping[int, float]]) -> Curve:
    steps = sorted({step for one in histories for step in one})
    at = [[one[step] for one in histories if step in one] for step in steps]
    return Curve(
        variant=variant,
        steps=tuple(steps),
        mean=tuple(statistics.fmean(values) for values in at),
        std=tuple(statistics.stdev(values) if len(values) > 1 else math.nan for values in at),
    )
