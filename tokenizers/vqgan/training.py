"""Training a VQ-GAN with the shared trainer, evaluated on held-out images.

Every `eval_every` updates (and after the last) the trainer calls back with the
current (EMA, if enabled) weights; we log reconstruction PSNR on the val images,
codebook usage and perplexity over all their codes, and a grid of originals
above reconstructions.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np
import torch

from mmgen.api import Trainer, TrainerConfig

from .autoencoder import VQAutoencoder, pixels_to_unit, unit_to_pixels
from .losses import LossConfig, VQGANLoss, VQGANTrainee, code_statistics, psnr

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Optimisation options (defaults: the Shapes quickstart, measured in benchmarks/vqgan_shapes_quality.py)."""

    steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = None
    ema_decay: float | None = None
    log_every: int = 50
    checkpoint_every: int = 500
    eval_every: int | None = None  # None: only after the last update
    eval_images: int = 256
    grid_images: int = 16
    num_workers: int = 0

    def trainer_config(self, *, seed: int) -> TrainerConfig:
        return TrainerConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            betas=self.betas,
            weight_decay=self.weight_decay,
            warmup_steps=min(self.warmup_steps, self.steps),
            min_lr_ratio=self.min_lr_ratio,
            grad_clip=self.grad_clip,
            ema_decay=self.ema_decay,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
            num_workers=self.num_workers,
            seed=seed,
        )


class ImageItems:
    """A map-style dataset of images: item i is `load(records[i].data)`."""

    def __init__(self, records: Sequence[Any], load: Callable[[bytes], torch.Tensor]) -> None:
        self.records = records
        self.load = load

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(self.records[index].data)


def stack_images(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


class PrefixedTracker:
    """Passes everything to `tracker`, with metric names prefixed (one run logs several trainings)."""

    def __init__(self, tracker: Any, prefix: str) -> None:
        self.tracker = tracker
        self.prefix = prefix

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.tracker.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)


@torch.no_grad()
def evaluate(autoencoder: VQAutoencoder, images: torch.Tensor, *, batch_size: int = 64) -> dict[str, float]:
    """PSNR (dB, on uint8 reconstructions), codebook usage and perplexity over `images` uint8 [N, 3, H, W]."""
    device = next(autoencoder.parameters()).device
    reconstructions, codes = [], []
    for start in range(0, len(images), batch_size):
        x = pixels_to_unit(images[start : start + batch_size].to(device))
        q = autoencoder.encode(x)
        reconstructions.append(unit_to_pixels(autoencoder.decode(q.quantized)).cpu())
        codes.append(q.codes.cpu())
    usage, perplexity = code_statistics(torch.cat(codes), autoencoder.quantizer.codebook_size)
    rebuilt = torch.cat(reconstructions)
    return {
        "psnr": psnr(pixels_to_unit(rebuilt), pixels_to_unit(images)),
        "codebook_usage": usage,
        "perplexity": perplexity,
    }


@torch.no_grad()
def reconstruction_grid(autoencoder: VQAutoencoder, images: torch.Tensor) -> np.ndarray:
    """uint8 [2H, N*W, 3]: originals on top, reconstructions below."""
    device = next(autoencoder.parameters()).device
    rebuilt, _ = autoencoder(pixels_to_unit(images.to(device)))
    rows = [torch.cat(list(batch.permute(0, 2, 3, 1)), dim=1) for batch in (images, unit_to_pixels(rebuilt).cpu())]
    return torch.cat(rows, dim=0).numpy()


def train_autoencoder(
    autoencoder: VQAutoencoder,
    *,
    loss: LossConfig,
    train: TrainConfig,
    seed: int = 0,
    train_images: Any,
    val_images: torch.Tensor | None,
    out_dir: Path,
    tracker: Any = None,
    device: str = "cpu",
    on_eval: Callable[[VQAutoencoder, int, dict[str, float]], None] | None = None,
) -> tuple[VQAutoencoder, dict[str, float]]:
    """Train in place; returns the trained (EMA, if enabled) autoencoder and its last val metrics.

    `train_images` is a map-style dataset of uint8 [3, H, W] tensors; `val_images`
    a uint8 [N, 3, H, W] tensor (None: no evaluation).
    """
    trainee = VQGANTrainee(autoencoder, loss)
    # Minutes of work on a CPU: a bar on a terminal, a log line every 30 s (step, loss, rate, ETA) elsewhere.
    config = train.trainer_config(seed=seed)
    trainer = Trainer(config, out_dir=out_dir, tracker=tracker, device=device, progress_desc="vqgan")
    stream = trainer.make_stream(train_images, collate=stack_images)
    results: dict[str, float] = {}
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def sample(module: VQGANTrainee, step: int) -> None:
        if val_images is None:
            return
        paused = time.perf_counter()
        metrics = evaluate(module.autoencoder, val_images)
        metrics["train_seconds"] = paused - clock["start"] - clock["paused"]
        results.clear()
        results.update(metrics)
        if tracker is not None:
            tracker.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=step)
            grid = reconstruction_grid(module.autoencoder, val_images[: train.grid_images])
            tracker.log_image(grid, file_name=f"reconstructions/step_{step:07d}.png")
        log.info("vqgan step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if on_eval is not None:
            on_eval(module.autoencoder, step, metrics)
        clock["paused"] += time.perf_counter() - paused

    trainer.fit(trainee, loss_fn=VQGANLoss(loss), stream=stream, sample_fn=sample, sample_every=train.eval_every)
    trained = trainer.sampling_module.autoencoder
    return trained, results
