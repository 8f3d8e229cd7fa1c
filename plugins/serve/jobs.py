"""Jobs of `mmgen serve`: a bounded queue and one worker thread, so the model runs one request at a time.

A busy server refuses rather than piling up work: `submit` raises QueueFull (the API's 503 with
Retry-After) when `capacity` jobs already wait. Finished jobs stay readable until `keep` newer ones
have finished; their files are held in memory under names the server made, so no name from a request
ever reaches the file system.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


class QueueFull(Exception):
    """Too many jobs wait; `retry_after` is the seconds the queue would take to drain, roughly."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy: try again in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """One request's state as the page polls it: status, progress, the frames of its steps, its outputs."""

    def __init__(self, task: str, work: Any) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.task, self.work = task, work
        self.status, self.error = QUEUED, None
        self.step = self.steps = 0
        self.frames: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.files: dict[str, bytes] = {}
        self.created, self.started, self.finished = time.monotonic(), None, None
        self.lock = threading.Lock()

    def add_file(self, name: str, data: bytes) -> str:
        with self.lock:
            self.files[name] = data
        return name

    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return round((self.finished or time.monotonic()) - self.started, 3)


class JobQueue:
    """Runs `run(job)` for each submitted job on one worker thread, in order of submission."""

    def __init__(self, run: Callable[[Job], None], *, capacity: int = 8, keep: int = 256) -> None:
        self.run, self.capacity, self.keep = run, capacity, keep
        self.waiting: queue.Queue[Job | None] = queue.Queue(maxsize=capacity)
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.lock = threading.Lock()
        self.recent: collections.deque[float] = collections.deque(maxlen=16)  # seconds of the last jobs
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="mmgen-serve-worker", daemon=True)
        self.worker.start()

    def submit(self, task: str, work: Any) -> Job:
        job = Job(task, work)
        with self.lock:
            try:
                self.waiting.put_nowait(job)
            except queue.Full:
                raise QueueFull(self.retry_after()) from None
            self.jobs[job.id] = job
            self._forget_old()
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many jobs run or wait before this one (0: it runs now or has finished)."""
        if job.status != QUEUED:
            return 0
        with self.lock:
            ahead = [j for j in self.jobs.values() if j.status in (QUEUED, RUNNING) and j.created < job.created]
        return len(ahead)

    def retry_after(self) -> int:
        """Seconds until a place frees, roughly: the mean of recent jobs times those ahead (at least 1)."""
        mean = sum(self.recent) / len(self.recent) if self.recent else 1.0
        return max(1, math.ceil(mean * (self.waiting.qsize() + 1)))

    def close(self) -> None:
        """Stop after the running job; waiting jobs are dropped (the server is going away)."""
        self.closed = True
        with contextlib.suppress(queue.Full):
            self.waiting.put_nowait(None)  # wakes an idle worker
        self.worker.join(timeout=30)

    def _forget_old(self) -> None:
        finished = [j.id for j in self.jobs.values() if j.status in (DONE, FAILED)]
        for job_id in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job_id]

    def _work(self) -> None:
        while not self.closed and (job := self.waiting.get()) is not None:
            job.status, job.started = RUNNING, time.monotonic()
            try:
                self.run(job)
                job.status = DONE
            except Exception as exc:  # one failed request must not stop the server
                job.error = _message(exc)
                job.status = FAILED
                log.warning("job %s (%s) failed: %s", job.id, job.task, job.error, exc_info=not _expected(exc))
            finally:
                job.finished = time.monotonic()
                self.recent.append(job.finished - job.started)
                job.work = None  # its inputs are no longer needed


def _expected(exc: Exception) -> bool:
    """Errors with a message meant for the user (a bad request the checks could not see)."""
    from mmgen.api import UserError

    return isinstance(exc, (UserError, ValueError))


def _message(exc: Exception) -> str:
    return str(exc) if _expected(exc) else f"internal error ({type(exc).__name__}); the server log has the details"


def job_folder(out_dir: Path, job: Job) -> Path:
    """Where a job's outputs go: a folder named by the server-made id, inside the server's output folder."""
    return out_dir / f"{job.task}-{job.id}"
