"""Faults a long run meets, injected into a whole tiny pipeline run by the `mmgen` command.

Corrupt bytes in each kind of artefact, SIGKILL during each stage then a resume,
a full disk: every run either completes correctly (the same artefacts as an
undisturbed run, all verified) or fails with one clear line, and no finished
artefact is ever left corrupt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_helpers import free_port, start_server, stop_server

HERE = Path(__file__).resolve().parent

# The whole pipeline at toy size with built-in components: a few seconds a run.
RECIPE = """
name: fault-tiny
seed: 0
device: cpu
tracker: {use: none}
stages:
  data:
    dataset: {use: shapes, size: 32, max_objects: 1, object_order: reading, train: 64, val: 16, test: 8, holdout: 0}
  tokenizers:
    tokenizers:
      - {use: vqgan, preset: tiny, train: {steps: 20, batch_size: 8, warmup_steps: 1, log_every: 5, checkpoint_every: 5, eval_images: 8, grid_images: 4}}
      - {use: sentencepiece_bpe, vocab_size: 64, max_length: 32}   # every caption fits: no warning line
  cache: {}
  train:
    model: {use: magvlt, preset: tiny}
    objectives: [{use: mask}, {use: target_length}]
    trainer: {steps: 30, batch_size: 8, lr: 1e-3, warmup_steps: 2, log_every: 10, checkpoint_every: 10}
    samples: {prompts: 0}
  generate:
    tasks: [t2i, i2t]
    prompts: 4
    sampler: {use: maskgit, fixed: {steps: 4}, variable: {steps: 4}}
  evaluate:
    metrics: [{use: shapes_accuracy}]
"""
STAGES = ["data", "tokenizers", "cache", "train", "generate", "evaluate"]
# LMDB pages hold bytes that differ between two identical writes: those stages are compared through their readers.
BYTE_IDENTICAL = ["tokenizers", "train", "generate", "evaluate"]


def env(**extra: str) -> dict[str, str]:
    # One torch thread: the 2 shared cores are faster that way at toy sizes (tests/conftest.py).
    return {**os.environ, "OMP_NUM_THREADS": "1", "MMGEN_NO_PROGRESS": "1", **extra}


def mmgen(*args: str, cwd: Path, driver: tuple[str, ...] = (), retries: int | None = None) -> subprocess.CompletedProcess:
    """`mmgen ARGS` in a child process, through tests/fault_driver.py when a fault is given."""
    command = [sys.executable, "-m", "mmgen.cli"]
    if driver:
        command = [sys.executable, str(HERE / "fault_driver.py"), *driver, "--"]
    extra = {} if retries is None else {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    return subprocess.run([*command, *args], cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=600)


def run(workdir: Path, *extra: str, driver: tuple[str, ...] = (), retries: int | None = None) -> subprocess.CompletedProcess:
    """`mmgen run` of the tiny recipe in `workdir`."""
    recipe = workdir.parent / "recipe.yaml"
    recipe.write_text(RECIPE)
    args = ("-q", "run", str(recipe), "--set", f"workdir={workdir}", *extra)
    return mmgen(*args, cwd=workdir.parent, driver=driver, retries=retries)


def folders(workdir: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[0]: p for p in (workdir / "artefacts").iterdir() if not p.name.startswith(".")}


def done(folder: Path) -> dict:
    return json.loads((folder / "DONE.json").read_text())


# Wall-clock seconds of the generation protocols (generate, evaluate) and the table that shows them.
TIMED = {"timings.json", "results.md"}


def outputs(folder: Path) -> dict[str, str]:
    """The recorded hashes of a finished folder's outputs. Not its trainer checkpoints: a resumed run
    writes checkpoints with the same tensors, but torch.save may lay the bytes out differently. Nor the
    files of timings, which are wall clock."""
    files = done(folder)["files"].items()
    return {name: digest for name, digest in files if "/checkpoints/" not in name and Path(name).name not in TIMED}


def assert_one_error_line(result: subprocess.CompletedProcess, start: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def assert_verified(workdir: Path) -> None:
    result = mmgen("verify", str(workdir), cwd=workdir.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.startswith("ok ") for line in result.stdout.splitlines()), result.stdout


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> Path:
    """The workdir of one undisturbed run."""
    workdir = tmp_path_factory.mktemp("undisturbed") / "runs"
    result = run(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


# ---- corrupt bytes ---------------------------------------------------------------------------

CORRUPTIONS = [
    # (stage folder, file in it, a later stage that reads it and is made to run again)
    ("data", "train.lmdb/data.mdb", "cache"),
    ("tokenizers", "image/weights.pt", "cache"),
    ("tokenizers", "text/spm.model", "train"),
    ("cache", "val.lmdb/data.mdb", "train"),
    ("train", "weights.pt", "generate"),
    ("train", "model.json", "generate"),
    ("generate", "one_sample/generations.jsonl", "evaluate"),
]


@pytest.mark.parametrize("stage, name, reader", CORRUPTIONS, ids=[f"{s}/{n}" for s, n, _ in CORRUPTIONS])
def test_a_corrupt_artefact_stops_its_reader_with_one_line_naming_it(undisturbed, tmp_path, stage, name, reader):
    workdir = tmp_path / "runs"
    shutil.copytree(undisturbed, workdir)
    target = folders(workdir)[stage] / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    (folders(workdir)[reader] / "DONE.json").unlink()  # the reader runs again, as after an interrupted run

    result = run(workdir)
    assert_one_error_line(result, f"error: {target}: content does not match its recorded sha256 (corrupt or altered)")
    assert not (folders(workdir)[reader] / "DONE.json").exists()  # the reader did not run on it
    verify = mmgen("verify", str(workdir), cwd=tmp_path)
    assert verify.returncode == 1
    assert f"corrupt      {folders(workdir)[stage].name}  {target}: content does not match" in verify.stdout


def test_generate_refuses_corrupt_weights_with_one_line(undisturbed, tmp_path):
    workdir = tmp_path / "runs"
    shutil.copytree(undisturbed, workdir)
    weights = folders(workdir)["train"] / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 3] ^= 0x10
    weights.write_bytes(bytes(data))
    result = mmgen("generate", "--run", str(workdir), "--task", "t2i", "--prompt", "a red circle", cwd=tmp_path)
    assert_one_error_line(result, f"error: {weights}: content does not match its recorded sha256")
    assert not (tmp_path / "generations").exists()


def test_an_unreadable_done_record_is_one_line(undisturbed, tmp_path):
    workdir = tmp_path / "runs"
    shutil.copytree(undisturbed, workdir)
    record = folders(workdir)["cache"] / "DONE.json"
    record.write_bytes(record.read_bytes()[:20])
    result = run(workdir)
    assert_one_error_line(result, f"error: {record}: unreadable")


# ---- SIGKILL during each stage, then resume -----------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_a_run_killed_during_a_stage_resumes_to_the_same_artefacts(undisturbed, tmp_path, stage):
    workdir = tmp_path / "runs"
    # Half the stage's undisturbed time, so the kill lands inside its work (or, if the machine is
    # faster now, right after it, before it is marked done).
    seconds = done(folders(undisturbed)[stage])["seconds"] / 2
    killed = run(workdir, driver=("kill", stage, f"{seconds:.3f}"))
    assert killed.returncode == -9, killed.stderr[-3000:]
    made = folders(workdir)
    assert not (made[stage] / "DONE.json").exists()
    for earlier in STAGES[: STAGES.index(stage)]:
        assert (made[earlier] / "DONE.json").is_file()

    resumed = run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_verified(workdir)
    made, reference = folders(workdir), folders(undisturbed)
    assert {key: p.name for key, p in made.items()} == {key: p.name for key, p in reference.items()}
    for key in BYTE_IDENTICAL:
        assert outputs(made[key]) == outputs(reference[key]), key


def test_a_corrupt_checkpoint_is_set_aside_and_training_resumes_from_the_one_before(undisturbed, tmp_path):
    workdir = tmp_path / "runs"
    # Killed after its work, before DONE: checkpoints at steps 10, 20 and 30 are on disk.
    assert run(workdir, driver=("kill", "train", "600")).returncode == -9
    checkpoints = folders(workdir)["train"] / "trainer" / "checkpoints"
    newest = checkpoints / "step-00000030.pt"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated, as by a crash outside mmgen's writer

    resumed = run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-00000030.pt: content does not match step-00000030.pt.sha256" in resumed.stderr
    assert (checkpoints / ".corrupt-step-00000030.pt").is_file()  # kept for inspection
    assert_verified(workdir)
    # Steps 21-30 trained again from the step-20 checkpoint give the same weights.
    assert outputs(folders(workdir)["train"]) == outputs(folders(undisturbed)["train"])


# ---- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB tmpfs: room for the data and part of the tokenizers stage. Needs root (CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(small_disk):
    workdir = small_disk / "runs"
    result = run(workdir)
    assert_one_error_line(result, "error: stage 'tokenizers': no space left on the device writing ")
    assert result.stderr.rstrip().endswith(
        "free some space and run the same command again (finished stages are kept, this one resumes)"
    )
    made = folders(workdir)
    assert (made["data"] / "DONE.json").is_file() and not (made["tokenizers"] / "DONE.json").exists()
    assert_verified_finished = mmgen("verify", str(made["data"]), cwd=small_disk)
    assert assert_verified_finished.returncode == 0, assert_verified_finished.stdout

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    resumed = run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_verified(workdir)


# ---- the tracking server goes away mid-run ----------------------------------------------------


def test_a_tracking_server_lost_mid_run_is_one_line_and_the_run_resumes(undisturbed, tmp_path):
    folder = tmp_path / "mlflow"
    folder.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    tracked = ("--set", f"tracker={{use: mlflow, experiment: faults, tracking_uri: '{uri}'}}")
    server = start_server(folder, port)
    workdir = tmp_path / "runs"
    try:
        # MLflow retries a lost server for minutes by default; none here, so the test is quick.
        lost = run(workdir, *tracked, driver=("stop", "train", str(server.pid)), retries=0)
    finally:
        stop_server(server)
    assert_one_error_line(lost, f"error: MLflow tracking server {uri} stopped answering while logging ")
    assert "start the server and run the same command again to resume" in lost.stderr
    made = folders(workdir)
    assert all((made[key] / "DONE.json").is_file() for key in ("data", "tokenizers", "cache"))
    assert not (made["train"] / "DONE.json").exists()

    server = start_server(folder, port)
    try:
        resumed = run(workdir, *tracked, retries=0)
    finally:
        stop_server(server)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_verified(workdir)
    for key in BYTE_IDENTICAL:
        assert outputs(folders(workdir)[key]) == outputs(folders(undisturbed)[key]), key
