"""The `shapes_accuracy` metric: T2I and I2T correctness of generations, judged by the Shapes oracles.

Returns, per task present: `<task>/accuracy`, one share per check (colour, shape,
size, cell, relation, count; I2T also parsed), `<task>/objects_<k>` (accuracy
over references with k objects), `<task>/heldout` (over references holding a
held-out colour-shape pair) and `<task>/n`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, Iterable

import attrs
import numpy as np

from .spec import parse_pair


class ShapesAccuracy:
    name: ClassVar[str] = "shapes_accuracy"

    @attrs.frozen(kw_only=True)
    class Config:
        holdout_pairs: tuple[str, ...] = ("yellow triangle",)

    def __init__(self, *, holdout_pairs: tuple[str, ...] = ("yellow triangle",)) -> None:
        self.held_out = {parse_pair(pair) for pair in holdout_pairs}

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> ShapesAccuracy:
        return cls(holdout_pairs=config.holdout_pairs)

    def judge(self, generation: Any) -> Any:
        from .accuracy import i2t_correct, t2i_correct

        if generation.task == "t2i":
            pixels = np.asarray(generation.outputs["image"], dtype=np.uint8)
            size = generation.reference.get("size") or pixels.shape[0]
            return t2i_correct(generation.inputs["text"], pixels, size=size)
        if generation.task == "i2t":
            return i2t_correct(generation.outputs["text"], generation.reference)
        return None

    def compute(self, generations: Iterable[Any]) -> dict[str, float]:
        groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for generation in generations:
            judgement = self.judge(generation)
            if judgement is None:
                continue
            found = groups[generation.task]
            found["accuracy"].append(judgement.correct)
            for check, ok in judgement.checks.items():
                found[check].append(ok)
            found[f"objects_{judgement.n_objects}"].append(judgement.correct)
            pairs = {(o["colour"], o["shape"]) for o in generation.reference.get("objects", [])}
            if pairs & self.held_out:
                found["heldout"].append(judgement.correct)
        results: dict[str, float] = {}
        for task, found in sorted(groups.items()):
            for name, values in sorted(found.items()):
                results[f"{task}/{name}"] = float(np.mean(values))
            results[f"{task}/n"] = float(len(found["accuracy"]))
        return results
