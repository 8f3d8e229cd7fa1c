"""Trainer.fit: schedule, accumulation, EMA, clipping, weight decay groups, logging, sampling."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from trainer_helpers import MemoryTracker, TinyMLP, collate, make_data, mse_loss, plain_mse_loss  # noqa: E402

from mmgen.ema import EMA  # noqa: E402
from mmgen.lr_schedule import WarmupCosine  # noqa: E402
from mmgen.protocols import ObjectiveOutput  # noqa: E402
from mmgen.trainer import Trainer, TrainerConfig, adamw, move_to  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**overrides) -> TrainerConfig:
    options = dict(steps=6, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=100, log_every=1, grad_clip=None)
    return TrainerConfig(**{**options, **overrides})


def train(tmp_path: Path, config: TrainerConfig, *, loss_fn=plain_mse_loss, model=None, **fit_options):
    torch.manual_seed(0)
    model = model if model is not None else TinyMLP()
    tracker = MemoryTracker()
    trainer = Trainer(config, out_dir=tmp_path, tracker=tracker, quiet=True)
    stream = trainer.make_stream(make_data(), collate=collate)
    result = trainer.fit(model, loss_fn=loss_fn, stream=stream, **fit_options)
    return trainer, model, tracker, result


# ---- learning-rate schedule ----------------------------------------------------


def test_warmup_then_cosine_values():
    schedule = WarmupCosine(base_lr=1.0, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    assert schedule(0) == 0.5
    assert schedule(1) == 1.0
    assert schedule(2) == 1.0  # decay starts at progress 0
    assert schedule(6) == pytest.approx(0.55, abs=1e-12)  # progress 1/2: 0.1 + 0.9 * 0.5
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)), abs=1e-12)
    assert schedule(10) == pytest.approx(0.1, abs=1e-12)
    assert schedule(50) == pytest.approx(0.1, abs=1e-12)


def test_schedule_without_warmup_starts_at_base_lr():
    schedule = WarmupCosine(base_lr=2.0, total_steps=4, warmup_steps=0, min_lr_ratio=0.0)
    assert [schedule(s) for s in range(4)] == pytest.approx([2.0, 1.0 + 2 ** -0.5, 1.0, 1.0 - 2 ** -0.5], abs=1e-12)


def test_schedule_rejects_warmup_longer_than_run():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(base_lr=1.0, total_steps=3, warmup_steps=4)
    with pytest.raises(ValueError, match="warmup_steps \\(4\\) must be <= steps \\(3\\)"):
        TrainerConfig(steps=3, warmup_steps=4)


def test_logged_lr_is_the_schedule_of_each_update(tmp_path):
    config = small_config(min_lr_ratio=0.1)
    _, _, tracker, _ = train(tmp_path, config)
    schedule = config.schedule()
    assert [tracker.metrics[s]["lr"] for s in range(1, 7)] == [schedule(s) for s in range(6)]


# ---- optimisation --------------------------------------------------------------


def test_two_half_batches_accumulated_equal_one_full_batch(tmp_path):
    _, full, _, _ = train(tmp_path / "full", small_config(batch_size=8))
    _, halves, _, _ = train(tmp_path / "halves", small_config(batch_size=8, grad_accum=2))
    for (name, a), b in zip(full.named_parameters(), halves.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_accumulated_metrics_average_losses_and_sum_tokens(tmp_path):
    _, _, tracker, _ = train(tmp_path, small_config(batch_size=8, grad_accum=2, steps=2, warmup_steps=0), loss_fn=mse_loss)
    assert tracker.metrics[1]["tokens"] == 8.0


def test_ema_update_is_exact_on_one_parameter():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema = EMA(module, decay=0.5)
    for value, expected in [(3.0, 2.0), (6.0, 4.0), (0.0, 2.0)]:
        with torch.no_grad():
            module.weight.fill_(value)
        ema.update(module)
        assert ema.shadow["weight"].item() == expected


def test_trainer_ema_follows_every_update(tmp_path):
    seen: list[torch.Tensor] = []

    def recording_loss(module, batch, step, generator):
        seen.append(module.out.weight.detach().clone())  # weights after update `step - 1`
        return plain_mse_loss(module, batch, step, generator)

    trainer, model, _, _ = train(tmp_path, small_config(ema_decay=0.75), loss_fn=recording_loss)
    expected = seen[0].clone()
    for weights in [*seen[1:], model.out.weight.detach()]:
        expected.lerp_(weights, 0.25)
    assert torch.equal(trainer.ema_module.out.weight, expected)
    assert not trainer.ema_module.training
    assert not torch.equal(trainer.ema_module.out.weight, model.out.weight)


class Dot(nn.Module):
    """loss = w . (3, 4): the gradient is (3, 4), norm 5, whatever w is."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 2))

    def forward(self) -> torch.Tensor:
        return (self.w[0] * torch.tensor([3.0, 4.0])).sum()


def dot_loss(module, batch, step, generator):
    return ObjectiveOutput(loss=module())


@pytest.mark.parametrize(("clip", "first_moment"), [(1.0, [0.06, 0.08]), (None, [0.3, 0.4])])
def test_gradient_clipping_scales_the_gradient_to_the_norm(tmp_path, clip, first_moment):
    config = small_config(steps=1, warmup_steps=0, grad_clip=clip, betas=(0.9, 0.95))
    trainer, _, tracker, _ = train(tmp_path, config, loss_fn=dot_loss, model=Dot())
    exp_avg = trainer.optimizer.state[trainer.optimizer.param_groups[0]["params"][0]]["exp_avg"]
    torch.testing.assert_close(exp_avg[0], torch.tensor(first_moment))  # (1 - beta1) * clipped gradient
    if clip is not None:
        assert tracker.metrics[1]["grad_norm"] == pytest.approx(5.0)
    else:
        assert "grad_norm" not in tracker.metrics[1]


class WithDeclaredNoDecay(TinyMLP):
    def no_decay_parameter_names(self) -> list[str]:
        return ["out.weight"]


def test_weight_decay_skips_biases_norms_embeddings_and_declared_names():
    config = TrainerConfig(weight_decay=0.1)
    plain, declared = TinyMLP(), WithDeclaredNoDecay()
    names = {id(p): n for n, p in plain.named_parameters()}
    decay, no_decay = adamw(plain, config).param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert sorted(names[id(p)] for p in decay["params"]) == ["blocks.0.0.weight", "blocks.1.0.weight", "out.weight"]
    assert "embed.weight" in {names[id(p)] for p in no_decay["params"]}
    assert "blocks.0.1.weight" in {names[id(p)] for p in no_decay["params"]}  # LayerNorm gain
    names = {id(p): n for n, p in declared.named_parameters()}
    assert sorted(names[id(p)] for p in adamw(declared, config).param_groups[0]["params"]) == [
        "blocks.0.0.weight",
        "blocks.1.0.weight",
    ]


# ---- logging, sampling, checks -------------------------------------------------


def test_metrics_logged_every_log_every_steps_and_at_the_end(tmp_path):
    calls: list[int] = []
    _, _, tracker, result = train(
        tmp_path, small_config(steps=7, log_every=3, grad_clip=1.0), loss_fn=mse_loss, on_log=lambda s, m: calls.append(s)
    )
    assert sorted(tracker.metrics) == [3, 6, 7] == calls
    assert set(tracker.metrics[3]) == {"loss", "tokens", "tokens_per_s", "lr", "grad_norm"}
    assert result.metrics == tracker.metrics[7]
    assert (result.steps, result.start_step) == (7, 0)


def test_sample_fn_gets_the_ema_module_in_eval_mode_every_sample_every_steps(tmp_path):
    calls = []

    def sample_fn(module, step):
        calls.append((step, module.training, torch.is_grad_enabled()))

    trainer, model, _, _ = train(tmp_path, small_config(ema_decay=0.9), sample_fn=sample_fn, sample_every=2)
    assert calls == [(2, False, False), (4, False, False), (6, False, False)]
    assert model.training


def test_sample_fn_without_sample_every_runs_once_at_the_end(tmp_path):
    calls = []
    train(tmp_path, small_config(), sample_fn=lambda module, step: calls.append((step, module.training)))
    assert calls == [(6, False)]


def test_progress_lines_name_the_run(tmp_path, caplog, monkeypatch):
    # Off a terminal the trainer writes one progress line at the end (and one every 30 s), named by
    # `progress_desc` so the tokenizer's, MAGVLT's and CLIP's runs can be told apart in one log.
    monkeypatch.delenv("MMGEN_NO_PROGRESS", raising=False)
    trainer = Trainer(small_config(), out_dir=tmp_path, progress_desc="vqgan")
    with caplog.at_level("INFO", logger="mmgen.progress"):
        trainer.fit(TinyMLP(), loss_fn=plain_mse_loss, stream=trainer.make_stream(make_data(), collate=collate))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("vqgan 6/6 step (100%), "), lines
    assert ", loss=" in lines[0] and ", lr=" in lines[0]


def test_stream_batch_size_must_match_the_micro_batch(tmp_path):
    trainer = Trainer(small_config(batch_size=8, grad_accum=2), out_dir=tmp_path, quiet=True)
    from mmgen.data_stream import BatchStream

    stream = BatchStream(make_data(), batch_size=8, collate=collate, seed=0)
    with pytest.raises(ValueError, match=r"stream batch_size 8 != batch_size 8 / \(world_size 1 x grad_accum 2\) = 4"):
        trainer.fit(TinyMLP(), loss_fn=plain_mse_loss, stream=stream)


def test_non_finite_loss_stops_training(tmp_path):
    def nan_loss(module, batch, step, generator):
        out = plain_mse_loss(module, batch, step, generator)
        return ObjectiveOutput(loss=out.loss * float("nan") if step == 2 else out.loss)

    with pytest.raises(FloatingPointError, match="loss is nan at step 3"):
        train(tmp_path, small_config(), loss_fn=nan_loss)


def test_finished_run_resumes_to_nothing_and_keeps_its_weights(tmp_path):
    _, first, _, _ = train(tmp_path, small_config(checkpoint_every=3))
    torch.manual_seed(1)
    _, again, tracker, result = train(tmp_path, small_config(checkpoint_every=3), model=TinyMLP())
    assert (result.start_step, result.steps, tracker.metrics) == (6, 6, {})
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_move_to_handles_nested_batches():
    batch = {"a": [torch.zeros(1), (torch.ones(1), "text")], "n": 3}
    moved = move_to(batch, torch.device("meta"))
    assert moved["a"][0].device.type == "meta" and moved["a"][1][0].device.type == "meta"
    assert moved["a"][1][1] == "text" and moved["n"] == 3


@pytest.mark.parametrize(("precision", "dtype"), [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_auto_is_fp32_on_cpu_and_bf16_autocasts(tmp_path, precision, dtype):
    dtypes = []

    def recording_loss(module, batch, step, generator):
        dtypes.append(module.head(module(batch["x"], batch["ids"])).dtype)
        return plain_mse_loss(module, batch, step, generator)

    train(tmp_path, small_config(steps=1, warmup_steps=0, precision=precision), loss_fn=recording_loss)
    assert dtypes == [dtype]


class Checkpointable(TinyMLP):
    def __init__(self) -> None:
        super().__init__()
        self.checkpointing_calls: list[bool] = []

    def set_activation_checkpointing(self, enabled: bool) -> None:
        self.checkpointing_calls.append(enabled)


@pytest.mark.parametrize(("enabled", "calls"), [(True, [True]), (False, [])])
def test_activation_checkpointing_is_switched_on_through_the_module(tmp_path, enabled, calls):
    model = Checkpointable()
    train(tmp_path, small_config(steps=1, warmup_steps=0, activation_checkpointing=enabled), model=model)
    assert model.checkpointing_calls == calls


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 2)
        self.head = nn.Linear(2, 3, bias=False)
        self.head.weight = self.embed.weight


def test_ema_of_tied_weights_averages_once_and_covers_every_state_dict_key():
    module = Tied()
    with torch.no_grad():
        module.embed.weight.fill_(1.0)
    ema = EMA(module, decay=0.5)
    with torch.no_grad():
        module.embed.weight.fill_(3.0)
    ema.update(module)
    assert sorted(ema.state_dict()) == sorted(module.state_dict()) == ["embed.weight", "head.weight"]
    assert ema.state_dict()["head.weight"].unique().tolist() == [2.0]  # one lerp, not two
    assert ema.state_dict()["head.weight"] is ema.state_dict()["embed.weight"]


# ---- one update at a time (Trainer.start / Trainer.step) --------------------------------------


def test_start_then_step_makes_exactly_the_updates_fit_makes(tmp_path):
    config = small_config(ema_decay=0.9, grad_clip=1.0)
    fitted, fitted_model, tracker, _ = train(tmp_path / "fit", config, loss_fn=mse_loss)
    torch.manual_seed(0)
    model = TinyMLP()
    trainer = Trainer(config, out_dir=tmp_path / "steps", quiet=True)
    assert trainer.start(model, loss_fn=mse_loss, stream=trainer.make_stream(make_data(), collate=collate)) == 0
    results = [trainer.step() for _ in range(config.steps)]
    assert [r.step for r in results] == list(range(1, 7))
    assert [r.lr for r in results] == [tracker.metrics[s]["lr"] for s in range(1, 7)]
    assert [float(r.metrics["loss"]) for r in results] == [tracker.metrics[s]["loss"] for s in range(1, 7)]
    assert [float(r.grad_norm) for r in results] == [tracker.metrics[s]["grad_norm"] for s in range(1, 7)]
    for (name, a), b in zip(fitted_model.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(fitted.ema_module.named_parameters(), trainer.ema_module.parameters()):
        assert torch.equal(a, b), name
    assert not (tmp_path / "steps" / "checkpoints").exists() or not any((tmp_path / "steps" / "checkpoints").iterdir())


def test_start_resumes_from_the_latest_checkpoint(tmp_path):
    config = small_config(checkpoint_every=3, steps=3)
    train(tmp_path, config)
    trainer = Trainer(small_config(checkpoint_every=3), out_dir=tmp_path, quiet=True)
    stream = trainer.make_stream(make_data(), collate=collate)
    assert trainer.start(TinyMLP(), loss_fn=plain_mse_loss, stream=stream, resume=True) == 3
    assert trainer.step().step == 4


def test_step_before_start_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="call start"):
        Trainer(small_config(), out_dir=tmp_path, quiet=True).step()
