"""Two gloo processes on CPU train exactly like one process at the same global batch.

The ranks are forked from the test process (torch is already imported there,
a fresh interpreter would need ~10 s on this machine) and set the torchrun
environment variables themselves.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it on first use, ~3 s: do it once, before forking)
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from trainer_helpers import MemoryTracker, TinyMLP, collate, make_data, plain_mse_loss  # noqa: E402

from mmgen import checkpoint, distributed  # noqa: E402
from mmgen.protocols import ObjectiveOutput  # noqa: E402
from mmgen.trainer import Trainer, TrainerConfig  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

# Constant lr (no warm-up, floor == base) so a run stopped at step 2 and resumed
# to step 4 follows the same schedule as one run of 4 steps.
CONFIG = dict(batch_size=8, lr=1e-2, warmup_steps=0, min_lr_ratio=1.0, grad_clip=1.0, log_every=1, checkpoint_every=2)


def two_pass_loss(module: TinyMLP, batch, step, generator) -> ObjectiveOutput:
    """Two forward passes and a call to `head` outside forward, as MAGVLT's UnrollMask makes."""
    first = plain_mse_loss(module, batch, step, generator).loss
    shifted = module.head(module(0.5 * batch["x"], batch["ids"]))
    return ObjectiveOutput(loss=first + 0.5 * (shifted - batch["y"]).square().mean())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_torchrun_env(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )


def fit(out_dir: Path, config: TrainerConfig, model: nn.Module, *, loss_fn=two_pass_loss, **options):
    tracker = MemoryTracker()
    trainer = Trainer(config, out_dir=out_dir, tracker=tracker, quiet=True)
    trainer.fit(model, loss_fn=loss_fn, stream=trainer.make_stream(make_data(32), collate=collate), **options)
    return trainer, tracker


def write_losses(tracker: MemoryTracker, path: Path) -> None:
    path.write_text(json.dumps({step: m["loss"] for step, m in tracker.metrics.items()}))


def read_losses(path: Path) -> dict[int, float]:
    return {int(step): loss for step, loss in json.loads(path.read_text()).items()}


def assert_same_state(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def single_process(tmp_path: Path, *, steps: int, ema_decay: float | None = None, sample_fn=None):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = TrainerConfig(steps=steps, distributed="none", ema_decay=ema_decay, **CONFIG)
    return fit(tmp_path / "single", config, TinyMLP(), sample_fn=sample_fn, sample_every=2 if sample_fn else None)


# ---- data parallel -----------------------------------------------------------------


def ddp_rank(rank: int, world_size: int, port: int, tmp_path: Path) -> None:
    set_torchrun_env(rank, world_size, port)
    torch.manual_seed(rank)  # different weights per rank: rank 0's must be broadcast
    config = TrainerConfig(steps=3, distributed="ddp", **CONFIG)
    _, tracker = fit(tmp_path / "ddp", config, TinyMLP())
    if rank == 0:
        write_losses(tracker, tmp_path / "ddp_losses.json")


def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path):
    mp.start_processes(ddp_rank, args=(2, free_port(), tmp_path), nprocs=2, start_method="fork")
    trainer, tracker = single_process(tmp_path, steps=3)
    losses = read_losses(tmp_path / "ddp_losses.json")
    assert sorted(losses) == [1, 2, 3]
    assert [losses[s] for s in (1, 2, 3)] == pytest.approx([tracker.metrics[s]["loss"] for s in (1, 2, 3)], rel=1e-5)
    final = checkpoint.load(tmp_path / "ddp" / "checkpoints" / "step-00000003.pt")
    assert final["world_size"] == 2 and len(final["rng"]) == 2
    assert_same_state(final["model"], trainer.module.state_dict())


def gradient_rank(rank: int, world_size: int, port: int, tmp_path: Path) -> None:
    set_torchrun_env(rank, world_size, port)
    dist.init_process_group("gloo")
    used_everywhere, used_on_rank_1, never_used = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    used_everywhere.grad = torch.tensor([1.0, 2.0]) if rank == 0 else torch.tensor([3.0, 4.0])
    used_on_rank_1.grad = torch.tensor([2.0, 6.0]) if rank == 1 else None
    distributed.average_gradients([used_everywhere, used_on_rank_1, never_used], world_size=world_size)
    if rank == 0:
        torch.save(
            {"everywhere": used_everywhere.grad, "rank_1": used_on_rank_1.grad, "never": never_used.grad},
            tmp_path / "grads.pt",
        )
    dist.destroy_process_group()


def test_average_gradients_means_over_ranks_and_keeps_unused_parameters_gradient_free(tmp_path):
    mp.start_processes(gradient_rank, args=(2, free_port(), tmp_path), nprocs=2, start_method="fork")
    grads = torch.load(tmp_path / "grads.pt", weights_only=True)
    assert grads["everywhere"].tolist() == [2.0, 3.0]
    assert grads["rank_1"].tolist() == [1.0, 3.0]  # rank 0 counts as zero
    assert grads["never"] is None


# ---- FSDP2 -------------------------------------------------------------------------

PROBE = torch.linspace(-1, 1, 8).reshape(2, 4)


def probe_outputs(module: TinyMLP) -> torch.Tensor:
    return module.head(module(PROBE, torch.tensor([0, 3])))


def fsdp_rank(rank: int, world_size: int, port: int, tmp_path: Path) -> None:
    set_torchrun_env(rank, world_size, port)
    # The caller owns the process group here, so both fits share it.
    dist.init_process_group("gloo")
    samples: dict[int, list[float]] = {}

    def sample_fn(module, step):
        samples[step] = probe_outputs(module).flatten().tolist()

    # Run 2 steps, then a fresh model and trainer resume from that checkpoint to step 4.
    for steps, seed in ((2, 0), (4, 1)):
        torch.manual_seed(seed)
        config = TrainerConfig(steps=steps, distributed="fsdp", ema_decay=0.5, **CONFIG)
        trainer, tracker = fit(tmp_path / "fsdp", config, TinyMLP(), sample_fn=sample_fn, sample_every=2)
        if rank == 0:
            write_losses(tracker, tmp_path / f"fsdp_losses_{steps}.json")
    if rank == 0:
        (tmp_path / "fsdp_samples.json").write_text(json.dumps(samples))
    dist.destroy_process_group()


def test_two_process_fsdp2_matches_one_process_and_resumes(tmp_path):
    mp.start_processes(fsdp_rank, args=(2, free_port(), tmp_path), nprocs=2, start_method="fork")
    samples: dict[int, list[float]] = {}
    trainer, tracker = single_process(
        tmp_path, steps=4, ema_decay=0.5, sample_fn=lambda m, s: samples.update({s: probe_outputs(m).flatten().tolist()})
    )
    expected = [tracker.metrics[s]["loss"] for s in (1, 2, 3, 4)]
    first, resumed = read_losses(tmp_path / "fsdp_losses_2.json"), read_losses(tmp_path / "fsdp_losses_4.json")
    assert [first[1], first[2], resumed[3], resumed[4]] == pytest.approx(expected, rel=1e-5)
    assert sorted(resumed) == [3, 4]
    final = checkpoint.load(tmp_path / "fsdp" / "checkpoints" / "step-00000004.pt")
    assert_same_state(final["model"], trainer.module.state_dict())
    assert_same_state(final["ema"], trainer.ema.state_dict())
    # sample_fn ran on both ranks' shards with the EMA weights swapped in.
    fsdp_samples = {int(k): v for k, v in json.loads((tmp_path / "fsdp_samples.json").read_text()).items()}
    assert sorted(fsdp_samples) == [2, 4]
    for step in (2, 4):
        assert fsdp_samples[step] == pytest.approx(samples[step], rel=1e-5, abs=1e-6)
