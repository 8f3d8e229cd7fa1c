"""The one training loop for every trainable component (VQ-GAN, MAGVLT, CLIP, and any plugin's).

An objective supplies `loss_fn(module, batch, step, generator) -> ObjectiveOutput`;
the trainer owns everything else: AdamW with warm-up + cosine decay, gradient
accumulation and clipping, EMA weights, precision, distribution (see
`mmgen.distributed`), atomic checkpoints that resume onto exactly the same loss
curve, tracking and a progress bar.

Step numbering: `loss_fn` sees the 0-based index of the update it computes;
metrics, checkpoints and `sample_fn` use the number of finished updates
(1 after the first step).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Literal, Mapping

import attrs
import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from . import distributed
from .data_stream import BatchStream
from .ema import EMA
from .lr_schedule import WarmupCosine
from .progress import progress
from .protocols import ObjectiveOutput
from .validators import non_negative, positive, positive_or_none

log = logging.getLogger(__name__)
LossFn = Callable[[nn.Module, Any, int, torch.Generator], ObjectiveOutput]
CHECKPOINT_FORMAT = 1


@attrs.frozen(kw_only=True)
class TrainerConfig:
    """Optimisation and run options shared by every trained component.

    `batch_size` is the global batch of one optimizer update: each rank reads
    micro-batches of `batch_size / (world_size * grad_accum)`.
    """

    steps: int = attrs.field(default=1000, validator=positive)
    batch_size: int = attrs.field(default=32, validator=positive)
    lr: float = attrs.field(default=3e-4, validator=positive)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = attrs.field(default=0.01, validator=non_negative)
    warmup_steps: int = attrs.field(default=100, validator=non_negative)
    min_lr_ratio: float = 0.1
    grad_clip: float | None = attrs.field(default=1.0, validator=positive_or_none)
    grad_accum: int = attrs.field(default=1, validator=positive)
    ema_decay: float | None = None
    # auto: fp32 on CPU (bf16 matmul is ~100x slower on our CPUs), bf16 autocast on GPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    checkpoint_every: int = attrs.field(default=500, validator=positive)
    keep_last: int = attrs.field(default=3, validator=positive)
    log_every: int = attrs.field(default=10, validator=positive)
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    num_workers: int = attrs.field(default=0, validator=non_negative)
    # None: the recipe's seed (a recipe sets every unset `seed`); 0 where no recipe is behind the config.
    seed: int | None = attrs.field(default=None, validator=attrs.validators.optional(non_negative))

    @property
    def run_seed(self) -> int:
        return 0 if self.seed is None else self.seed

    def __attrs_post_init__(self) -> None:
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")

    def micro_batch_size(self, world_size: int = 1) -> int:
        """Examples per rank per backward pass."""
        per_step = world_size * self.grad_accum
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by world_size {world_size} x grad_accum {self.grad_accum}"
            )
        return self.batch_size // per_step

    def schedule(self) -> WarmupCosine:
        return WarmupCosine(
            base_lr=self.lr, total_steps=self.steps, warmup_steps=self.warmup_steps, min_lr_ratio=self.min_lr_ratio
        )


@attrs.frozen(kw_only=True)
class TrainResult:
    steps: int  # finished updates (== config.steps)
    start_step: int  # where this call began: 0, or the step of the checkpoint it resumed from
    metrics: Mapping[str, float]  # the last logged metrics (empty when nothing was left to train)
    checkpoint: Path | None  # the newest checkpoint (None off rank 0)
    seconds: float


@attrs.frozen(kw_only=True)
class StepResult:
    """What one optimizer update (`Trainer.step`) did; tensors stay on the device (reading them syncs)."""

    step: int  # finished updates after this one (1 after the first)
    metrics: Mapping[str, Any]  # the objective's loss and metrics: tokens summed over micro-batches, the rest averaged
    lr: float
    grad_norm: torch.Tensor | None  # before clipping; None without grad_clip


@attrs.define(kw_only=True)
class _Run:
    """What one `fit` call trains with."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    stream: BatchStream
    generator: torch.Generator
    ctx: distributed.DistContext
    device: torch.device


def adamw(module: nn.Module, config: TrainerConfig) -> torch.optim.AdamW:
    """AdamW with weight decay only on matrices that are not embeddings.

    Biases, norm gains (every parameter with fewer than 2 dims) and embedding
    tables are not decayed; a module may name more in `no_decay_parameter_names()`.
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    exempt = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    declared = set(module.no_decay_parameter_names()) if hasattr(module, "no_decay_parameter_names") else set()
    unknown = declared - {n for n, _ in named}
    if unknown:
        raise KeyError(f"no_decay_parameter_names() names unknown parameters: {sorted(unknown)}")
    no_decay = [p for n, p in named if p.ndim < 2 or id(p) in exempt or n in declared]
    decay = [p for n, p in named if not (p.ndim < 2 or id(p) in exempt or n in declared)]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel does the whole update in one pass per tensor: about a tenth of a
    # small model's CPU step otherwise goes to AdamW's many elementwise ops.
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for _, p in named)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused or None)


def move_to(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor on `device` (objects with `.to`, tensors, dicts, lists, tuples)."""
    if isinstance(batch, torch.Tensor) or hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


class Trainer:
    """Runs `fit`; one Trainer per training run (per `out_dir`)."""

    def __init__(
        self,
        config: TrainerConfig,
        *,
        out_dir: Path,
        tracker: Any = None,
        device: str | torch.device = "cpu",
        quiet: bool = False,
        progress_desc: str = "train",
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.tracker = tracker
        self.device = torch.device(device)
        self.quiet = quiet
        self.progress_desc = progress_desc  # names the run in its bar / log lines: "train", "vqgan", "clip"
        self.checkpoints = ckpt.CheckpointDir(self.out_dir / "checkpoints", keep_last=config.keep_last)
        self.ema: EMA | None = None
        self.optimizer: torch.optim.AdamW | None = None
        self._module: nn.Module | None = None
        self._ema_copy: nn.Module | None = None
        self._ctx = distributed.DistContext()
        self._run: _Run | None = None
        self._loss_fn: LossFn | None = None
        self._next_step = 0

    # ---- helpers for callers -------------------------------------------------

    def make_stream(self, dataset: Any, *, collate: Callable[[list[Any]], Any]) -> BatchStream:
        """The BatchStream `fit` expects: this rank's share, micro-batch sized, seeded by the config."""
        rank, world_size, _ = distributed.env_world()
        return BatchStream(
            dataset,
            batch_size=self.config.micro_batch_size(world_size),
            collate=collate,
            seed=self.config.run_seed,
            rank=rank,
            world_size=world_size,
            num_workers=self.config.num_workers,
        )

    @property
    def ema_module(self) -> nn.Module:
        """A copy of the trained module holding the EMA weights, in eval mode."""
        if self.ema is None or self._module is None:
            raise RuntimeError("no EMA weights: set ema_decay in TrainerConfig and call fit first")
        if self._ctx.mode == "fsdp":
            raise RuntimeError("an FSDP-sharded module cannot be copied; sample_fn receives it with EMA weights applied")
        if self._ema_copy is None:
            self._ema_copy = copy.deepcopy(self._module).eval().requires_grad_(False)
        self.ema.copy_to(self._ema_copy)
        return self._ema_copy

    @property
    def sampling_module(self) -> nn.Module:
        """The EMA copy when EMA is on, else the trained module."""
        if self._module is None:
            raise RuntimeError("call fit first")
        return self.ema_module if self.ema is not None else self._module

    @property
    def module(self) -> nn.Module:
        """The module `fit` trained (sharded in place under FSDP)."""
        if self._module is None:
            raise RuntimeError("call fit first")
        return self._module

    @property
    def is_main(self) -> bool:
        return self._ctx.is_main

    # ---- the loop -------------------------------------------------------------

    def fit(
        self,
        module: nn.Module,
        *,
        loss_fn: LossFn,
        stream: BatchStream,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
        sample_fn: Callable[[nn.Module, int], None] | None = None,
        sample_every: int | None = None,
    ) -> TrainResult:
        """Train `module` in place for `config.steps` updates, resuming from out_dir's latest checkpoint.

        `on_log(step, metrics)` runs on rank 0 at every log step. `sample_fn(module,
        step)` runs every `sample_every` steps (None: after the last step) on rank
        0 — on every rank under FSDP, whose sharded forward needs them all — with
        the module in eval mode, EMA weights in place when enabled, under no_grad.
        """
        started = time.perf_counter()
        ctx = distributed.setup(self.config.distributed, self.device)
        try:
            start_step = self._begin(module, loss_fn=loss_fn, stream=stream, ctx=ctx, resume=True)
            metrics, last = self._loop(start_step, on_log, sample_fn, sample_every)
            return TrainResult(
                steps=self.config.steps,
                start_step=start_step,
                metrics=metrics,
                checkpoint=last,
                seconds=time.perf_counter() - started,
            )
        finally:
            distributed.cleanup(ctx)

    def start(self, module: nn.Module, *, loss_fn: LossFn, stream: Any, resume: bool = False) -> int:
        """Set `module` up to be trained one update at a time by `step`, in this process (no distribution).

        For loops of one's own (benchmarks, notebooks): the same optimizer, schedule, EMA, seeding and
        update as `fit`, without its checkpoints, logging or progress bar. `stream` yields batches (a
        BatchStream from `make_stream`, or any iterator); `resume` restores out_dir's latest checkpoint.
        Returns the 0-based index of the first update `step` will make.
        """
        return self._begin(module, loss_fn=loss_fn, stream=stream, ctx=distributed.DistContext(), resume=resume)

    def step(self) -> StepResult:
        """One optimizer update on the next batch(es) of the stream: the update `fit` makes at each step."""
        if self._run is None or self._loss_fn is None:
            raise RuntimeError("call start (or fit) first")
        sums, lr, grad_norm = self._update(self._run, self._next_step, self._loss_fn)
        self._next_step += 1
        return StepResult(step=self._next_step, metrics=sums, lr=lr, grad_norm=grad_norm)

    def _begin(
        self, module: nn.Module, *, loss_fn: LossFn, stream: Any, ctx: distributed.DistContext, resume: bool
    ) -> int:
        """Prepare module, optimizer, EMA and generator for `step`; returns the first step (resumed or 0)."""
        self._ctx = ctx
        device = distributed.rank_device(self.device, ctx)
        self._check_stream(stream, ctx)
        module = self._prepare(module, device, ctx)
        self.optimizer = adamw(module, self.config)
        self.ema = EMA(module, decay=self.config.ema_decay) if self.config.ema_decay is not None else None
        self._run = _Run(
            module=module,
            optimizer=self.optimizer,
            stream=stream,
            generator=torch.Generator(device=device),
            ctx=ctx,
            device=device,
        )
        self._seed(self._run)
        self._loss_fn = loss_fn
        self._next_step = self._resume(self._run) if resume else 0
        return self._next_step

    def _check_stream(self, stream: Any, ctx: distributed.DistContext) -> None:
        expected = self.config.micro_batch_size(ctx.world_size)
        got = getattr(stream, "batch_size", expected)
        if got != expected:
            raise ValueError(
                f"stream batch_size {got} != batch_size {self.config.batch_size} / (world_size {ctx.world_size}"
                f" x grad_accum {self.config.grad_accum}) = {expected}; build it with Trainer.make_stream"
            )
        if (getattr(stream, "rank", ctx.rank), getattr(stream, "world_size", ctx.world_size)) != (ctx.rank, ctx.world_size):
            raise ValueError(
                f"stream is rank {stream.rank} of {stream.world_size} but this process is rank {ctx.rank} of {ctx.world_size}"
            )

    def _prepare(self, module: nn.Module, device: torch.device, ctx: distributed.DistContext) -> nn.Module:
        module.to(device).train()
        if self.config.activation_checkpointing:
            if hasattr(module, "set_activation_checkpointing"):
                module.set_activation_checkpointing(True)
            else:
                log.warning("%s has no set_activation_checkpointing; option ignored", type(module).__name__)
        if ctx.mode == "fsdp":
            distributed.fully_shard_module(module)
        elif ctx.mode == "ddp":
            distributed.broadcast_parameters(module)
        if self.config.compile:
            # In-place compile keeps the module object, its state_dict keys and its
            # other methods (logits, length_logits) as they are.
            module.compile()
        self._module = module
        self._ema_copy = None
        return module

    def _seed(self, run: _Run) -> None:
        seed = self.config.run_seed + run.ctx.rank
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        run.generator.manual_seed(seed)

    def _precision(self, device: torch.device) -> ContextManager[Any]:
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def _loop(
        self,
        start_step: int,
        on_log: Callable[[int, dict[str, float]], None] | None,
        sample_fn: Callable[[nn.Module, int], None] | None,
        sample_every: int | None,
    ) -> tuple[dict[str, float], Path | None]:
        config, run = self.config, self._run
        assert run is not None
        progress = self._progress_bar(start_step, run.ctx)
        logged: dict[str, float] = {}
        last_checkpoint = self.checkpoints.latest() if run.ctx.is_main else None
        tokens_since_log, log_clock = 0.0, time.perf_counter()
        for _ in range(start_step, config.steps):
            result = self.step()
            done = result.step
            tokens_since_log += result.metrics.get("tokens", 0.0)  # a tensor stays on the device until logged
            if done % config.log_every == 0 or done == config.steps:
                seconds = time.perf_counter() - log_clock
                logged = self._log(
                    result.metrics, result.lr, result.grad_norm, run.ctx, done, float(tokens_since_log), seconds
                )
                tokens_since_log, log_clock = 0.0, time.perf_counter()
                if run.ctx.is_main and on_log is not None:
                    on_log(done, logged)
                progress.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{result.lr:.2e}", refresh=False)
            progress.update(1)
            if done % config.checkpoint_every == 0 or done == config.steps:
                last_checkpoint = self._save(run, done) or last_checkpoint
            if sample_fn is not None and (done == config.steps if sample_every is None else done % sample_every == 0):
                self._sample(run, sample_fn, done)
        progress.close()
        run.stream.close()
        return logged, last_checkpoint

    def _update(self, run: _Run, step: int, loss_fn: LossFn) -> tuple[dict[str, Any], float, torch.Tensor | None]:
        """One optimizer update: returns the step's metrics, its lr and the gradient norm before clipping."""
        lr = self.config.schedule()(step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        sums = self._accumulate(run, step, loss_fn)
        params = [p for p in run.module.parameters() if p.requires_grad]
        if run.ctx.mode == "ddp":
            distributed.average_gradients(params, world_size=run.ctx.world_size)
        grad_norm = None
        if self.config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(run.module)
        return sums, lr, grad_norm

    def _accumulate(self, run: _Run, step: int, loss_fn: LossFn) -> dict[str, Any]:
        """Forward and backward `grad_accum` micro-batches; returns their metrics (tokens summed, rest averaged)."""
        accum = self.config.grad_accum
        sums: dict[str, Any] = {}
        for micro in range(accum):
            if run.ctx.mode == "fsdp":
                # FSDP2 reduce-scatters once, after the last micro-batch's backward.
                run.module.set_requires_gradient_sync(micro == accum - 1)
            batch = move_to(next(run.stream), run.device)
            with self._precision(run.device):
                out = loss_fn(run.module, batch, step, run.generator)
            (out.loss / accum).backward()
            for name, value in {"loss": out.loss, **out.metrics}.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                sums[name] = sums.get(name, 0.0) + (value if name == "tokens" else value / accum)
        return sums

    def _log(
        self,
        sums: Mapping[str, Any],
        lr: float,
        grad_norm: torch.Tensor | None,
        ctx: distributed.DistContext,
        step: int,
        tokens: float,
        seconds: float,
    ) -> dict[str, float]:
        metrics = {name: float(value) for name, value in sums.items()}
        if grad_norm is not None:
            metrics["grad_norm"] = float(distributed.full_tensor(grad_norm))
        if "tokens" in metrics:
            metrics["tokens_per_s"] = tokens / max(seconds, 1e-9)
        if ctx.active:
            metrics = distributed.all_reduce_metrics(metrics, sum_keys=("tokens", "tokens_per_s"))
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss is {metrics['loss']} at step {step}")
        metrics["lr"] = lr
        if ctx.is_main and self.tracker is not None:
            self.tracker.log_metrics(metrics, step=step)
        return metrics

    def _progress_bar(self, start_step: int, ctx: distributed.DistContext) -> Any:
        # A bar on a terminal, a log line every 30 s otherwise; `mmgen -q` and the tests turn it off.
        enabled = not self.quiet and ctx.is_main
        return progress(total=self.config.steps, initial=start_step, desc=self.progress_desc, unit="step", enabled=enabled)

    def _sample(self, run: _Run, sample_fn: Callable[[nn.Module, int], None], step: int) -> None:
        if run.ctx.mode != "fsdp" and not run.ctx.is_main:
            return
        if self.ema is not None and run.ctx.mode == "fsdp":
            weights: ContextManager[nn.Module] = self.ema.applied(run.module)
        elif self.ema is not None:
            weights = nullcontext(self.ema_module)
        else:
            weights = nullcontext(run.module)
        with weights as sampled:
            sampled.eval()
            try:
                with torch.no_grad():
                    sample_fn(sampled, step)
            finally:
                run.module.train()
                if sampled is not run.module:
                    sampled.eval()

    # ---- checkpoints ----------------------------------------------------------

    def _state(self, run: _Run, step: int) -> dict[str, Any] | None:
        """The checkpoint content, on rank 0 (None elsewhere); collective when distributed."""
        rng = ckpt.capture_rng(run.generator)
        rngs = distributed.gather_objects(rng) if run.ctx.active else [rng]
        if run.ctx.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_state, optim_state = get_state_dict(run.module, run.optimizer, options=options)
        else:
            model_state, optim_state = run.module.state_dict(), run.optimizer.state_dict()
        ema_state = None
        if self.ema is not None:
            ema_state = {name: distributed.full_tensor(t).cpu() for name, t in self.ema.state_dict().items()}
        if not run.ctx.is_main:
            return None
        return {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "world_size": run.ctx.world_size,
            "model": model_state,
            "optimizer": optim_state,
            "ema": ema_state,
            "stream": run.stream.state_dict(),
            "rng": rngs,
        }

    def _save(self, run: _Run, step: int) -> Path | None:
        state = self._state(run, step)
        path = self.checkpoints.save(step, state) if state is not None else None
        distributed.barrier(run.ctx)
        return path

    def _resume(self, run: _Run) -> int:
        """Restore the latest checkpoint in out_dir, if any; returns the step to continue from."""
        if run.ctx.is_main:
            self.checkpoints.remove_stale_temporaries()
            self.checkpoints.set_aside_corrupt()
        distributed.barrier(run.ctx)
        path = self.checkpoints.latest()
        if path is None:
            return 0
        state = ckpt.load(path)
        if state["world_size"] != run.ctx.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} rank(s); resume with the same world size, not {run.ctx.world_size}"
            )
        if run.ctx.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(
                run.module,
                run.optimizer,
                model_state_dict=state["model"],
                optim_state_dict=state["optimizer"],
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            run.module.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError(f"{path} has no EMA weights but ema_decay is set")
            shadow = self.ema.state_dict()
            self.ema.load_state_dict({n: distributed.shard_like(t, shadow[n]) for n, t in state["ema"].items()})
        run.stream.load_state_dict(state["stream"])
        ckpt.restore_rng(state["rng"][run.ctx.rank], run.generator)
        return int(state["step"])
