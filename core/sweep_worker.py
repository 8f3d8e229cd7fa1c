"""One sweep variant, run where a backend puts it: this process, a worker process, or a Ray task.

The job carries plain data only (the variant's recipe as YAML-level data, paths, ids), so it pickles
for any backend and the worker builds everything itself from its own plugin registry. The worker
never raises for a failing variant: it records the failure (status, one-line error, the traceback in
the variant's log) and returns, so one variant does not stop the others. It writes the variant's
record before the stages start (with its child run id) and after they end, so a rerun of the sweep
knows what finished, and reopens the same MLflow child run for a variant that was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import attrs

from .atomic import atomic_write_text

FINISHED, FAILED, RUNNING = "FINISHED", "FAILED", "RUNNING"


@attrs.frozen(kw_only=True)
class VariantJob:
    name: str
    data: dict[str, Any]  # the variant's whole recipe as YAML data (no sweep section)
    source: str | None  # the recipe file, for error messages
    tags: dict[str, str]
    parent_run_id: str | None
    record: str  # the variant's JSON record: status, run id, error, seconds
    log_file: str | None  # where the variant logs (None: the calling process's logging, e.g. a terminal)
    threads: int
    cwd: str  # relative paths in the recipe (a taming checkpoint) are read from here, on any worker


def read_record(path: Path | str) -> dict[str, Any]:
    """A variant's record; an empty one for a variant that never started (or whose record is unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_record(path: Path | str, record: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(record, indent=2))


def run_variant(job: VariantJob) -> dict[str, Any]:
    """Run the variant's recipe as a child run of the sweep's parent; returns its final record."""
    started = time.perf_counter()
    previous = read_record(job.record)
    record: dict[str, Any] = {"name": job.name, "status": RUNNING, "run_id": previous.get("run_id"), "pid": os.getpid()}
    with _variant_logging(job.log_file), _threads(job.threads), _working_dir(job.cwd):
        log = logging.getLogger("mmgen.sweep")
        tracker = None
        try:
            from .recipe import structure_recipe
            from .registry import load_registry
            from .runner import run_tracked

            registry = load_registry()
            recipe = structure_recipe(job.data, registry=registry, source=Path(job.source) if job.source else None)
            tracker = registry.build(recipe.header.tracker)
            start_run(tracker, name=job.name, tags=job.tags, parent_run_id=job.parent_run_id, run_id=record["run_id"])
            record["run_id"] = getattr(tracker, "run_id", None)
            write_record(job.record, record)
            log.info("variant %s: running (%d threads)", job.name, job.threads)
            results = run_tracked(recipe, registry=registry, tracker=tracker, wait_for_writers=True)
            record.update(status=FINISHED, stages={r.key: str(r.out_dir) for r in results})
        except KeyboardInterrupt:
            record["status"] = "KILLED"
            raise
        except Exception as exc:  # recorded, not raised: the other variants go on
            record.update(status=FAILED, error=one_line(exc))
            log.error("variant %s failed: %s", job.name, record["error"])
            # The traceback: in a worker's log file always; on a terminal only with -v (one line otherwise).
            log.log(logging.ERROR if job.log_file else logging.DEBUG, "%s", traceback.format_exc())
            if tracker is not None and hasattr(tracker, "set_tag"):
                tracker.set_tag("mmgen.error", record["error"])
        finally:
            record["seconds"] = round(time.perf_counter() - started, 1)
            if tracker is not None:
                tracker.end(status=record["status"] if record["status"] != RUNNING else "KILLED")
            write_record(job.record, record)
    return record


def one_line(exc: BaseException) -> str:
    from .errors import UserError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def start_run(tracker: Any, *, name: str, tags: dict[str, str], parent_run_id: str | None, run_id: str | None) -> None:
    """Start the child run, passing the parent and the run to reopen only to a tracker that takes them."""
    import inspect

    accepted = inspect.signature(tracker.start).parameters
    options = {"parent_run_id": parent_run_id, "run_id": run_id}
    tracker.start(run_name=name, tags=tags, **{k: v for k, v in options.items() if k in accepted and v is not None})


@contextlib.contextmanager
def _variant_logging(log_file: str | None) -> Iterator[None]:
    """In a worker, everything the variant logs goes to its own file (parallel variants do not interleave)."""
    if log_file is None:
        yield
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    for noisy in ("mlflow", "alembic", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    before = os.environ.get("MMGEN_PROGRESS")
    os.environ["MMGEN_PROGRESS"] = "log"  # no bars in a file: the periodic log lines instead
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MMGEN_PROGRESS", None)
        else:
            os.environ["MMGEN_PROGRESS"] = before
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    """N parallel variants on C cores get C / N threads each, so they do not oversubscribe the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
