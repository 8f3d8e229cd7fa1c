"""Options of cycle-checked caption refinement (caption_refine.py); importable without torch."""

from __future__ import annotations

from typing import Any

import attrs


def _positive(_instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"refine.{attribute.name} must be >= 1, got {value}")


def _probability(_instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"refine.{attribute.name} must be in [0, 1], got {value}")


def _non_negative(_instance: Any, attribute: Any, value: float) -> None:
    if value < 0:
        raise ValueError(f"refine.{attribute.name} must be >= 0, got {value}")


@attrs.frozen(kw_only=True)
class RefineConfig:
    sweeps: int = attrs.field(default=2, validator=_positive)  # measured: a third sweep changed nothing
    proposals: int = attrs.field(default=4, validator=_positive)
    min_prob: float = attrs.field(default=0.05, validator=_probability)
    prior_weight: float = attrs.field(default=1.0, validator=_non_negative)
