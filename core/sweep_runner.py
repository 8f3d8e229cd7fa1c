"""Runs a sweep: one parent tracker run, every variant a child run of it, resumable.

The sweep's state lives in `<workdir>/sweeps/<recipe name>-<digest>/`: `sweep.json` (the parent run's id
and the variants, in order), and per variant `variants/<name>.json` (its status, child run id, error,
seconds) and, when it ran in a worker, `logs/<name>.log`. The digest covers the recipe and its sweep
section, so an edited sweep is another sweep with its own parent run. Running the same sweep again
skips the finished variants and reruns the rest in the same parent run, each in its own child run
again; their stages resume from their checkpoints, and stages shared with finished variants are found
done by their content hashes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from .progress import duration
from .runner import stage_folders
from .sweep import Sweep, Variant
from .sweep_worker import FAILED, FINISHED, VariantJob, read_record, start_run, write_record

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
STATE_FILE = "sweep.json"


@attrs.frozen(kw_only=True)
class SweepOutcome:
    records: tuple[dict[str, Any], ...]  # every variant's record, in the sweep's order
    parent_run_id: str | None
    state_dir: Path
    location: str | None  # where a person finds the parent run
    store: str | None = None  # the tracking store, for `mmgen compare` (None: the tracker keeps no runs to compare)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != FINISHED]


def state_dir(sweep: Sweep) -> Path:
    return Path(sweep.base.header.workdir) / "sweeps" / f"{sweep.name}-{sweep.digest()}"


def safe_name(name: str) -> str:
    return name.replace("/", "__")


def record_path(sweep: Sweep, variant: Variant) -> Path:
    return state_dir(sweep) / "variants" / f"{safe_name(variant.name)}.json"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_sweep(
    sweep: Sweep,
    *,
    registry: Any,
    backend: str = "local",
    jobs: int = 1,
    ray_address: str | None = None,
    gpus: float = 0.0,
    tracker: Any = None,
) -> SweepOutcome:
    """Run every variant not finished yet; returns every variant's record. `jobs` variants run at once
    locally, each with cores / jobs threads; with Ray, each asks for the threads `jobs` would give it."""
    folder = state_dir(sweep)
    folder.mkdir(parents=True, exist_ok=True)
    state = read_record(folder / STATE_FILE)
    parent = tracker or registry.build(sweep.base.header.tracker)
    tags = {"mmgen.recipe": sweep.name, "mmgen.sweep": "parent", "mmgen.sweep.keys": json.dumps(list(sweep.keys))}
    start_run(parent, name=sweep.name, tags=tags, parent_run_id=None, run_id=state.get("parent_run_id"))
    parent_id = getattr(parent, "run_id", None)
    if not state:
        parent.log_text(yaml.safe_dump(dict(sweep.definition), sort_keys=False), file_name="sweep.yaml")
        parent.log_text(yaml.safe_dump(sweep.base.to_data(), sort_keys=False), file_name="recipe.yaml")
        parent.log_params({"sweep.variants": len(sweep.variants), "sweep.keys": ", ".join(sweep.keys)})
    write_record(folder / STATE_FILE, {"parent_run_id": parent_id, "variants": [v.name for v in sweep.variants]})
    records = {v.name: read_record(record_path(sweep, v)) for v in sweep.variants}
    todo = [v for v in sweep.variants if records[v.name].get("status") != FINISHED]
    skipped = len(sweep.variants) - len(todo)
    log.info(
        "sweep %s: %d variants, %d finished earlier (skipped), %d to run (%s, %d at once); state in %s",
        sweep.name, len(sweep.variants), skipped, len(todo), backend, jobs, folder,
    )  # fmt: skip
    threads = max(1, cores() // jobs)
    in_process = backend == "local" and jobs == 1
    store = getattr(parent, "store", None)
    job_list = [job_for(sweep, v, parent_id=parent_id, threads=threads, logs=not in_process, store=store) for v in todo]
    status = "FAILED"
    started, ended = time.monotonic(), [0]

    def done(record: dict[str, Any]) -> None:
        records[record["name"]] = record
        ended[0] += 1
        elapsed = time.monotonic() - started
        eta = elapsed / ended[0] * (len(todo) - ended[0])
        outcome = record["status"] + (f": {record.get('error')}" if record["status"] != FINISHED else "")
        log.info(
            "sweep %s: variant %s %s (%s); %d/%d done, ETA %s",
            sweep.name, record["name"], outcome, duration(record.get("seconds", 0.0)),
            ended[0], len(todo), duration(eta),
        )  # fmt: skip

    try:
        dispatch(job_list, done, backend=backend, workers=jobs, ray_address=ray_address, gpus=gpus)
        ordered = tuple(records[v.name] for v in sweep.variants)
        finished = sum(r.get("status") == FINISHED for r in ordered)
        parent.log_metrics({"sweep/finished": finished, "sweep/failed": len(ordered) - finished})
        status = "FINISHED" if finished == len(ordered) else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        parent.end(status=status)
    location = getattr(parent, "location", None)
    return SweepOutcome(
        records=ordered,
        parent_run_id=parent_id,
        state_dir=folder,
        location=location() if location else None,
        store=store or getattr(parent, "store", None),
    )


def dispatch(
    jobs: Sequence[VariantJob], done: Any, *, backend: str, workers: int, ray_address: str | None, gpus: float
) -> None:
    from . import sweep_backends

    if backend == "ray":
        sweep_backends.run_ray(jobs, done, address=ray_address, gpus=gpus)
    elif workers == 1:
        sweep_backends.run_here(jobs, done)
    else:
        sweep_backends.run_processes(jobs, done, workers=workers)


def job_for(
    sweep: Sweep, variant: Variant, *, parent_id: str | None, threads: int, logs: bool, store: str | None
) -> VariantJob:
    """The variant as plain data a worker anywhere can run: paths absolute, the parent's tracking store named."""
    data = variant.recipe.to_data()
    data["workdir"] = str(Path(data["workdir"]).resolve())
    if store and data["tracker"].get("use") == "mlflow":
        data["tracker"]["tracking_uri"] = store  # a worker in another folder (a Ray node) logs to the same store
    name = safe_name(variant.name)
    folder = state_dir(sweep).resolve()
    return VariantJob(
        name=variant.name,
        data=data,
        source=str(Path(sweep.base.source).resolve()) if sweep.base.source else None,
        tags=variant.tags(),
        parent_run_id=parent_id,
        record=str(folder / "variants" / f"{name}.json"),
        log_file=str(folder / "logs" / f"{name}.log") if logs else None,
        threads=threads,
        cwd=os.getcwd(),
    )


def describe(sweep: Sweep, *, registry: Any) -> list[str]:
    """`--dry-run`: each variant with what it sets and its state, and how many folders each stage takes
    (1: every variant shares it)."""
    lines = [f"sweep {sweep.name}: {len(sweep.variants)} variants ({state_dir(sweep)})"]
    folders: dict[str, set[Path]] = {}
    for variant in sweep.variants:
        status = read_record(record_path(sweep, variant)).get("status", "not run")
        sets = ", ".join(f"{k}={_brief(v)}" for k, v in variant.overrides.items()) or "(the recipe as written)"
        lines.append(f"  {variant.name:<28} {status:<9} {sets}")
        for key, path in stage_folders(variant.recipe, registry=registry).items():
            folders.setdefault(key, set()).add(path)
    shared = ", ".join(f"{key} {len(paths)}" for key, paths in folders.items())
    lines.append(f"stage folders across the variants (1: shared by all): {shared}")
    return lines


def _brief(value: Any, limit: int = 48) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary(outcome: SweepOutcome) -> list[str]:
    """A line per variant (status, seconds, child run), then where the parent run is."""
    width = max([12, *(len(r.get("name", "")) for r in outcome.records)])
    lines = ["", f"{'variant':<{width}} {'status':<9} {'time':>8}  run"]
    for record in outcome.records:
        status = record.get("status", "not run")
        took = duration(record.get("seconds", 0.0))
        lines.append(f"{record.get('name', '?'):<{width}} {status:<9} {took:>8}  {record.get('run_id') or '-'}")
        if status == FAILED:
            lines.append(f"{'':<{width}}   error: {record.get('error')}")
    failed = len(outcome.failed)
    lines.append(
        f"{len(outcome.records) - failed} of {len(outcome.records)} variants finished"
        + (f", {failed} failed: run the same command again to retry them" if failed else "")
    )
    if outcome.location:
        lines += ["", outcome.location]
    return lines
