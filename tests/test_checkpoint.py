"""Checkpoints: atomic writes, keep-last-K, RNG capture, and exact resume after SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import re
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it on first use, ~3 s: do it once, before forking)

sys.path.insert(0, str(Path(__file__).parent))

from trainer_helpers import MemoryTracker, TinyMLP, collate, make_data, mse_loss  # noqa: E402

from mmgen import checkpoint  # noqa: E402
from mmgen.api import ArtefactError  # noqa: E402
from mmgen.checkpoint import CheckpointDir, capture_rng, restore_rng, write_atomic  # noqa: E402
from mmgen.trainer import Trainer, TrainerConfig  # noqa: E402


def test_failed_write_leaves_the_previous_file_and_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "step-00000001.pt"
    write_atomic(target, {"value": torch.tensor([1.0])})

    def dies_mid_write(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, {"value": torch.tensor([2.0])})
    assert sorted(os.listdir(tmp_path)) == ["step-00000001.pt", "step-00000001.pt.sha256"]
    assert checkpoint.load(target)["value"].tolist() == [1.0]


def test_keep_last_keeps_exactly_the_newest_files(tmp_path):
    directory = CheckpointDir(tmp_path, keep_last=2)
    for step in (3, 6, 9, 12):
        directory.save(step, {"step": step})
    assert sorted(os.listdir(tmp_path)) == [
        "step-00000009.pt",
        "step-00000009.pt.sha256",
        "step-00000012.pt",
        "step-00000012.pt.sha256",
    ]
    assert directory.latest() == tmp_path / "step-00000012.pt"
    assert directory.steps() == [9, 12]


def test_latest_ignores_temporaries_of_a_killed_writer_and_they_are_removed(tmp_path):
    directory = CheckpointDir(tmp_path, keep_last=3)
    directory.save(4, {"step": 4})
    (tmp_path / ".tmp-abc.pt").write_bytes(b"partial")
    # Killed after writing the hash of step 8 but before the checkpoint itself.
    (tmp_path / "step-00000008.pt.sha256").write_text("0" * 64 + "  step-00000008.pt\n")
    assert directory.latest() == tmp_path / "step-00000004.pt"
    assert directory.remove_stale_temporaries() == [tmp_path / ".tmp-abc.pt", tmp_path / "step-00000008.pt.sha256"]
    assert sorted(os.listdir(tmp_path)) == ["step-00000004.pt", "step-00000004.pt.sha256"]


def test_a_changed_byte_is_refused_with_the_file_named(tmp_path):
    target = tmp_path / "step-00000001.pt"
    write_atomic(target, {"value": torch.arange(100.0)})
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=rf"^{re.escape(str(target))}: content does not match step-00000001.pt.sha256"):
        checkpoint.load(target)
    (tmp_path / "step-00000001.pt.sha256").unlink()
    with pytest.raises(ArtefactError, match=r"no readable content hash beside it \(step-00000001.pt.sha256\)"):
        checkpoint.load(target)


def test_corrupt_checkpoints_are_set_aside_and_the_newest_good_one_is_latest(tmp_path, caplog):
    directory = CheckpointDir(tmp_path, keep_last=None)
    for step in (2, 4, 6):
        directory.save(step, {"step": torch.tensor(step)})
    for step in (4, 6):
        path = directory.path(step)
        path.write_bytes(path.read_bytes()[:-10])  # truncated, as by a full disk outside mmgen's writer
    assert directory.set_aside_corrupt() == [tmp_path / ".corrupt-step-00000006.pt", tmp_path / ".corrupt-step-00000004.pt"]
    assert directory.latest() == tmp_path / "step-00000002.pt"
    assert checkpoint.load(directory.latest())["step"].item() == 2
    assert "set aside as .corrupt-step-00000006.pt" in caplog.text
    assert directory.set_aside_corrupt() == []  # the good one is not touched


def test_empty_directory_has_no_latest(tmp_path):
    assert CheckpointDir(tmp_path / "missing", keep_last=1).latest() is None


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    generator = torch.Generator().manual_seed(11)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    write_atomic(tmp_path / "rng.pt", {"rng": capture_rng(generator)})
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    torch.manual_seed(9), np.random.seed(9), random.seed(9), generator.manual_seed(9)
    restore_rng(checkpoint.load(tmp_path / "rng.pt")["rng"], generator)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=generator))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and torch.equal(expected[3], again[3])


# ---- killed and resumed training -------------------------------------------------

# 20 examples, micro-batch 4: 5 batches per epoch, so 12 steps cross two epoch
# boundaries; dropout and the loss's generator noise make every RNG state matter.
CONFIG = TrainerConfig(
    steps=12, batch_size=4, lr=1e-2, warmup_steps=3, checkpoint_every=3, keep_last=2, log_every=1,
    ema_decay=0.9, grad_clip=1.0, num_workers=2, seed=3,
)


def train(out_dir: Path, *, on_log=None, tracker=None) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TinyMLP(dropout=0.2)
    trainer = Trainer(CONFIG, out_dir=out_dir, tracker=tracker, quiet=True)
    trainer.fit(model, loss_fn=mse_loss, stream=trainer.make_stream(make_data(20), collate=collate), on_log=on_log)


def train_logging_losses(out_dir: Path, losses: Path, kill_at: int) -> None:
    """Child process: append "step loss" lines; SIGKILL itself after logging step `kill_at`."""

    def on_log(step, metrics):
        with open(losses, "a") as f:
            f.write(f"{step} {metrics['loss']!r}\n")
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(out_dir, on_log=on_log)


def run_in_child(out_dir: Path, losses: Path, *, kill_at: int) -> int:
    # A forked child starts with torch already imported (a fresh interpreter needs ~10 s here).
    child = multiprocessing.get_context("fork").Process(target=train_logging_losses, args=(out_dir, losses, kill_at))
    child.start()
    child.join(timeout=120)
    return child.exitcode


def read_losses(path: Path) -> list[tuple[int, float]]:
    return [(int(step), float(loss)) for step, loss in (line.split() for line in path.read_text().splitlines())]


def test_sigkill_then_resume_follows_the_uninterrupted_loss_curve(tmp_path):
    threads = torch.get_num_threads()
    tracker = MemoryTracker()
    try:
        train(tmp_path / "straight", tracker=tracker)
    finally:
        torch.set_num_threads(threads)
    uninterrupted = [(step, tracker.metrics[step]["loss"]) for step in range(1, 13)]

    out_dir, losses = tmp_path / "killed", tmp_path / "losses.txt"
    assert run_in_child(out_dir, losses, kill_at=8) == -signal.SIGKILL
    assert CheckpointDir(out_dir / "checkpoints", keep_last=None).steps() == [3, 6]
    assert run_in_child(out_dir, losses, kill_at=-1) == 0

    logged = read_losses(losses)
    # Steps 1-8 before the kill, then 7-12 again from the step-6 checkpoint.
    assert [step for step, _ in logged] == [*range(1, 9), *range(7, 13)]
    assert logged[:8] == uninterrupted[:8]
    assert logged[8:] == uninterrupted[6:]
    assert sorted(os.listdir(out_dir / "checkpoints")) == [
        "step-00000009.pt",
        "step-00000009.pt.sha256",
        "step-00000012.pt",
        "step-00000012.pt.sha256",
    ]
