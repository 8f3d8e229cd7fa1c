"""Training the audio VQ with mmgen's shared Trainer, evaluated on held-out clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs
import torch

from mmgen.api import ObjectiveOutput, Trainer, TrainerConfig, non_negative, positive

from .vq import AudioVQ


@attrs.frozen(kw_only=True)
class TrainConfig:
    steps: int = attrs.field(default=1500, validator=positive)
    batch_size: int = attrs.field(default=16, validator=positive)
    lr: float = attrs.field(default=2e-3, validator=positive)
    warmup_steps: int = attrs.field(default=50, validator=non_negative)
    commitment_weight: float = 0.25
    log_every: int = attrs.field(default=50, validator=positive)
    checkpoint_every: int = attrs.field(default=500, validator=positive)
    eval_clips: int = attrs.field(default=64, validator=non_negative)

    def trainer_config(self, *, seed: int) -> TrainerConfig:
        return TrainerConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            betas=(0.9, 0.99),
            weight_decay=0.0,
            warmup_steps=min(self.warmup_steps, self.steps),
            min_lr_ratio=0.05,
            grad_clip=None,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            seed=seed,
        )


class ClipItems:
    """A map-style dataset of waveforms: item i is `load(records[i])`."""

    def __init__(self, records: Sequence[Any], load: Callable[[Any], torch.Tensor]) -> None:
        self.records, self.load = records, load

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(self.records[index])


class VQLoss:
    """`loss_fn(module, batch, step, generator)` for the Trainer; `batch` is float waveforms [B, N]."""

    def __init__(self, *, commitment_weight: float) -> None:
        self.commitment_weight = commitment_weight

    def __call__(self, module: AudioVQ, batch: torch.Tensor, step: int, generator: torch.Generator) -> ObjectiveOutput:
        out = module(batch)
        loss = out["reconstruction"] + out["codebook"] + self.commitment_weight * out["commitment"]
        used = float(out["codes"].unique().numel()) / module.architecture.codebook_size
        metrics = {"rec_loss": out["reconstruction"].detach(), "batch_usage": used}
        return ObjectiveOutput(loss=loss, metrics=metrics)


@torch.no_grad()
def evaluate(module: AudioVQ, clips: torch.Tensor) -> dict[str, float]:
    """Log-mel reconstruction error through the codes and the share of the codebook in use, over `clips` [N, S]."""
    target = module.features(clips)
    codes = module.encode(clips)
    rebuilt = (module.decode_codes(codes) + 3.0) / 4.0  # the scaled features, as training compares them
    return {
        "rec_loss": float(torch.nn.functional.mse_loss(rebuilt, target)),
        "codebook_usage": float(codes.unique().numel()) / module.architecture.codebook_size,
    }


def train_vq(
    module: AudioVQ,
    *,
    train: TrainConfig,
    seed: int,
    clips: Any,
    val_clips: torch.Tensor | None,
    out_dir: Path,
    tracker: Any = None,
    device: str = "cpu",
    prefix: str = "audio/",
) -> tuple[AudioVQ, dict[str, float]]:
    """Train in place with the shared Trainer; returns the trained module and its last val metrics."""
    trainer = Trainer(
        train.trainer_config(seed=seed),
        out_dir=out_dir,
        tracker=_Prefixed(tracker, prefix) if tracker is not None else None,
        device=device,
        progress_desc="audio_vq",
    )
    stream = trainer.make_stream(clips, collate=torch.stack)
    results: dict[str, float] = {}

    def sample(trained: AudioVQ, step: int) -> None:
        if val_clips is None or len(val_clips) == 0:
            return
        results.update(evaluate(trained, val_clips.to(next(trained.parameters()).device)))
        if tracker is not None:
            tracker.log_metrics({f"{prefix}val/{k}": v for k, v in results.items()}, step=step)

    trainer.fit(module, loss_fn=VQLoss(commitment_weight=train.commitment_weight), stream=stream, sample_fn=sample)
    return trainer.sampling_module, results


class _Prefixed:
    """The tracker with metric names under `prefix` (a tokenizers stage may train several tokenizers)."""

    def __init__(self, tracker: Any, prefix: str) -> None:
        self.tracker, self.prefix = tracker, prefix

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.tracker.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)
