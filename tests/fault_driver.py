"""`mmgen` with one fault injected, for tests/test_fault_injection.py.

    python fault_driver.py kill STAGE SECONDS -- RUN ARGS...

runs `mmgen RUN ARGS...` and kills itself with SIGKILL (as the OOM killer or a
preempted machine does: no handler runs) while stage STAGE runs: SECONDS after
it starts, or as soon as its work is done but before it is marked done,
whichever comes first. Either way the stage is interrupted.

    python fault_driver.py stop STAGE PID -- RUN ARGS...

kills process group PID (a tracking server) with SIGKILL as stage STAGE starts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from mmgen import runner
from mmgen.cli import main


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_during(stage: str, seconds: float) -> None:
    original = runner._run_stage

    def run_stage(entry, out_dir, **options):
        if entry.key == stage:
            threading.Timer(seconds, die).start()
        original(entry, out_dir, **options)
        if entry.key == stage:
            die()

    runner._run_stage = run_stage


def stop_at(stage: str, group: int) -> None:
    original = runner._run_stage

    def run_stage(entry, out_dir, **options):
        if entry.key == stage:
            os.killpg(group, signal.SIGKILL)
        original(entry, out_dir, **options)

    runner._run_stage = run_stage


if __name__ == "__main__":
    fault, stage, value, separator, *args = sys.argv[1:]
    assert fault in ("kill", "stop") and separator == "--", sys.argv
    if fault == "kill":
        kill_during(stage, float(value))
    else:
        stop_at(stage, int(value))
    sys.exit(main(args))
