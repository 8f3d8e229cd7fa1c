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


def _distances(_instance: Any, _attribute: Any, value: tuple[int, ...]) -> None:
    if any(d < 1 for d in value) or len(set(value)) != len(value):
        raise ValueError(f"refine.pair_distances must be distinct and >= 1, got {list(value)}")


@attrs.frozen(kw_only=True)
class RefineConfig:
    """Defaults as measured in benchmarks/i2t_cycle_rerank.py (recipes/shapes.yaml widens to 6 and 4 proposals).

    `sweeps` is an upper bound: a sweep that changes no caption ends the search.
    `pair_distances` adds moves that change two words at once, d positions apart
    (coupled words such as "small triangle" -> "large square", which no single
    change reaches uphill); each of the two takes one of its `pair_proposals`
    likeliest words. () keeps single-word moves only.
    """

    sweeps: int = attrs.field(default=4, validator=_positive)
    proposals: int = attrs.field(default=4, validator=_positive)
    min_prob: float = attrs.field(default=0.05, validator=_probability)
    prior_weight: float = attrs.field(default=1.0, validator=_non_negative)
    pair_distances: tuple[int, ...] = attrs.field(default=(1, 2), converter=tuple, validator=_distances)
    pair_proposals: int = attrs.field(default=3, validator=_positive)
