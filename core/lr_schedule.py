"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

The schedule is a pure function of the step, so resuming from a checkpoint
needs only the step count to continue it exactly.
"""

from __future__ import annotations

import math

import attrs


@attrs.frozen(kw_only=True)
class WarmupCosine:
    """lr(step) for optimizer update `step` (0-based).

    Warm-up: lr = base_lr * (step + 1) / warmup_steps for step < warmup_steps,
    so the first update already moves and update `warmup_steps - 1` uses base_lr.
    Decay: with p = (step - warmup_steps) / (total_steps - warmup_steps),
    lr = base_lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi p)) / 2),
    which starts at base_lr and would reach base_lr * min_lr_ratio at p = 1
    (step == total_steps); steps past the end stay at the floor.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
