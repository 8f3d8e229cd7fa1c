"""Options of cycle-checked caption refinement (caption_refine.py)."""

from __future__ import annotations

from typing import Any

import attrs

from mmgen.api import non_negative, positive, probability


def _distances(_instance: Any, _attribute: Any, value: tuple[int, ...]) -> None:
    if any(d < 1 for d in value) or len(set(value)) != len(value):
        raise ValueError(f"pair_distances must be distinct and >= 1, got {list(value)}")


@attrs.frozen(kw_only=True)
class RefineConfig:
    """Defaults as measured in benchmarks/i2t_cycle_rerank.py (recipes/shapes.yaml widens to 6 and 4 proposals).

    `sweeps` is an upper bound: a sweep that changes no caption ends the search.
    `pair_distances` adds moves that change two words at once, d positions apart
    (coupled words such as "small triangle" -> "large square", which no single
    change reaches uphill); each of the two takes one of its `pair_proposals`
    likeliest words. () keeps single-word moves only.
    """

    sweeps: int = attrs.field(default=4, validator=positive)
    proposals: int = attrs.field(default=4, validator=positive)
    min_prob: float = attrs.field(default=0.05, validator=probability)
    prior_weight: float = attrs.field(default=1.0, validator=non_negative)
    pair_distances: tuple[int, ...] = attrs.field(default=(1, 2), converter=tuple, validator=_distances)
    pair_proposals: int = attrs.field(default=3, validator=positive)
    passes: int = attrs.field(default=2, validator=positive)  # of the cycle score climbed (cycle reranker's `passes`)
    image: str = "image"  # the modalities, by their names in the joint space
    text: str = "text"
