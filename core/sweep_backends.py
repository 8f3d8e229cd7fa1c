"""Where a sweep's variants run: this process, local worker processes (`--jobs N`), or Ray (`--backend ray`).

Each backend takes the jobs and calls `done(record)` as each variant ends, in the order they end. A
variant's failure is in its record, never an exception here; a worker that dies without writing its
record (killed, out of memory) is recorded as failed by the backend.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import UserError
from .sweep_worker import FAILED, FINISHED, VariantJob, read_record, run_variant, write_record

log = logging.getLogger(__name__)

Done = Callable[[dict[str, Any]], None]
POLL_S = 0.5


def run_here(jobs: Sequence[VariantJob], done: Done) -> None:
    """One after another in this process: its terminal shows each variant's bars and log."""
    for job in jobs:
        done(run_variant(job))


def run_processes(jobs: Sequence[VariantJob], done: Done, *, workers: int) -> None:
    """Up to `workers` variants at once, each in a fresh process (spawned: no state shared with this one)."""
    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running: dict[Any, VariantJob] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                process = context.Process(target=run_variant, args=(job,), name=f"mmgen-variant-{job.name}")
                process.start()
                log.info("variant %s: started in process %d (log: %s)", job.name, process.pid, job.log_file)
                running[process] = job
            time.sleep(POLL_S)
            for process in [p for p in running if not p.is_alive()]:
                job = running.pop(process)
                process.join()
                done(_ended(job, exit_code=process.exitcode))
    except KeyboardInterrupt:
        for process in running:
            process.terminate()  # their records stay RUNNING: the next run of the sweep resumes them
        raise


def _ended(job: VariantJob, *, exit_code: int | None) -> dict[str, Any]:
    record = read_record(job.record)
    if record.get("status") in (FINISHED, FAILED):
        return record
    # The worker died before it could record an outcome: say so, and the next run of the sweep retries it.
    record.update(
        name=job.name, status=FAILED, error=f"the worker process exited with code {exit_code} (killed? out of memory?)"
    )
    write_record(job.record, record)
    return record


def run_ray(jobs: Sequence[VariantJob], done: Done, *, address: str | None, gpus: float) -> None:
    """Each variant a Ray task asking for its threads as CPUs (and `gpus`), on the cluster at `address`
    (None: the one RAY_ADDRESS names, else a local instance). The workdir and the tracking store must be
    reachable from every node: a shared filesystem, and an MLflow server rather than a local SQLite file."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'mmgen[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    remote = ray.remote(run_variant)
    # A task asking for more CPUs than any node has waits forever: ask for at most the largest node's.
    most = max(1, max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=1))
    refs = {
        remote.options(num_cpus=min(job.threads, most), num_gpus=gpus, name=f"mmgen:{job.name}").remote(job): job
        for job in jobs
    }
    log.info("ray: %d variants submitted to %s", len(refs), ray.get_runtime_context().gcs_address)
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(ready[0])
        try:
            record = ray.get(ready[0])
        except Exception as exc:  # the task itself died (a node lost, the worker killed)
            record = _ended(job, exit_code=None)
            record["error"] = f"the Ray task failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            write_record(job.record, record)
        done(record)
