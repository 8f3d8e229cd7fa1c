"""`distinct_outputs`: per task, the share of generations whose outputs differ from every earlier one.

A collapsed sampler (or model) gives the same caption or picture for every
prompt; this metric shows it at a glance: `<task>/distinct` is the number of
distinct outputs over the number of generations, `<task>/n` that number.
Texts compare as strings, pictures (numpy arrays) by dtype, shape and bytes;
a generation with several outputs (t2it) counts as one combination.
"""

from __future__ import annotations

from typing import Any, ClassVar, Hashable, Iterable

import attrs
import numpy as np

from mmgen.api import Generation


class DistinctOutputs:
    name: ClassVar[str] = "distinct_outputs"

    @attrs.frozen(kw_only=True)
    class Config:
        """No options."""

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> DistinctOutputs:
        # Metrics receive `inputs` and `device`; this one needs neither.
        return cls()

    def compute(self, generations: Iterable[Generation]) -> dict[str, float]:
        seen: dict[str, list[Hashable]] = {}
        for generation in generations:
            outputs = tuple(sorted((m, comparable(item)) for m, item in generation.outputs.items()))
            seen.setdefault(generation.task, []).append(outputs)
        results = {}
        for task, outputs in sorted(seen.items()):
            results[f"{task}/distinct"] = len(set(outputs)) / len(outputs)
            results[f"{task}/n"] = float(len(outputs))
        return results


def comparable(item: Any) -> Hashable:
    """A hashable stand-in for one output: equal outputs give equal values."""
    if isinstance(item, np.ndarray):
        return ("array", item.dtype.str, item.shape, item.tobytes())
    if isinstance(item, str):
        return item
    return repr(item)
