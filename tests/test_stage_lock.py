"""One writer per stage folder (stage_folder.writer_lock): a second process is refused naming the holder,
a lock left by a killed process is taken over."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mmgen.recipe import load_recipe
from mmgen.runner import run_recipe
from mmgen.stage_folder import StageBusy, writer_lock
from registry_helpers import toy_registry

REGISTRY = toy_registry()

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mmgen.stage_folder import writer_lock
    with writer_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def hold_lock(folder: Path) -> subprocess.Popen:
    """A separate process holding the writer lock of `folder` until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def kill(holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    folder = tmp_path / "artefacts" / "train-abc"
    holder = hold_lock(folder)
    try:
        message = f"{folder}: another process (PID {holder.pid}) is running this stage; wait for it to finish, "
        with pytest.raises(StageBusy, match=f"^{re.escape(message)}"):
            with writer_lock(folder):
                pass
    finally:
        kill(holder)


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "artefacts" / "train-abc"
    holder = hold_lock(folder)
    kill(holder)  # SIGKILL: no chance to release; the lock file still names it
    assert (tmp_path / "artefacts" / ".train-abc.lock").read_text() == str(holder.pid)
    with caplog.at_level(logging.WARNING), writer_lock(folder):
        assert (tmp_path / "artefacts" / ".train-abc.lock").read_text() == str(os.getpid())
    assert f"taking over the lock of PID {holder.pid}, which stopped without releasing it" in caplog.text
    # Released cleanly: the next writer has nothing to take over.
    assert (tmp_path / "artefacts" / ".train-abc.lock").read_text() == ""
    caplog.clear()
    with writer_lock(folder):
        pass
    assert "taking over" not in caplog.text


def test_the_runner_refuses_a_stage_another_process_is_running(tmp_path):
    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text(
        f"name: toy\nworkdir: {tmp_path / 'runs'}\ntracker: {{use: none}}\n"
        "stages:\n  first: {use: toy_stage, value: 1}\n  second: {use: toy_stage, value: 2, reads: first}\n"
    )
    recipe = load_recipe(recipe_file, registry=REGISTRY)
    _, second = run_recipe(recipe, registry=REGISTRY)
    (second.out_dir / "DONE.json").unlink()  # as if the second stage were still running elsewhere
    holder = hold_lock(second.out_dir)
    try:
        with pytest.raises(StageBusy, match=f"another process \\(PID {holder.pid}\\) is running this stage"):
            run_recipe(recipe, registry=REGISTRY)
    finally:
        kill(holder)
    again = run_recipe(recipe, registry=REGISTRY)
    assert [r.cached for r in again] == [True, False]
    assert (second.out_dir / "DONE.json").is_file()
