"""The `shapes_episodes` dataset plugin: Shapes image-caption pairs in episodes under a hidden rule.

An episode is `pairs` (image, caption) pairs whose images are drawn under one
rule (rules.py: a colour or a shape remapped, objects shifted by a cell, or
none) that changes from episode to episode, so a model can only draw (or
caption) an episode's last pair right by reading the pairs before it. Each pair
is one record, the pairs of an episode consecutive: record `i` is pair
`i % pairs` of episode `i // pairs`, key `<split>-<episode>-p<pair>`. The
caption is the Shapes `full` caption of the scene as named (objects in reading
order); the image shows the scene as drawn. The meta holds the named scene
(`size`, `objects`, as a Shapes record's: the caption oracle judges captions
against it), the drawn scene (`drawn`), the rule (`rule`), `episode` and `pair`.
The same seed and options give the same bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import attrs
import numpy as np

from mmgen.api import FieldError, MissingSplitError, non_negative

from ..shapes.captions import prompt
from ..shapes.dataset import SPLIT_STREAMS, encode_png
from ..shapes.render import render
from ..shapes.scene import Scene
from ..shapes.spec import CANVAS_SIZES, CELLS, MAX_OBJECTS
from .rules import KINDS, Rule, apply_rule, draw_rule, sample_named_scene

if TYPE_CHECKING:
    from mmgen.api import Record

SPLITS = ("train", "val", "test")
RULE_STREAM, PAIR_STREAM = 0, 1  # an episode's rule and its pairs' scenes draw from streams of their own


def _check_kinds(_instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = [k for k in value if k not in KINDS]
    if not value or unknown:
        raise FieldError(attribute.name, f"must be a non-empty list of {', '.join(KINDS)}; got {list(value)}")


def _check_canvas(_instance: Any, attribute: Any, value: int) -> None:
    if value not in CANVAS_SIZES:
        raise FieldError(attribute.name, f"must be one of {', '.join(map(str, CANVAS_SIZES))}, got {value}")


def _check_range(low: int, high: int) -> Any:
    def check(_instance: Any, attribute: Any, value: int) -> None:
        if not low <= value <= high:
            raise FieldError(attribute.name, f"must be in {low}..{high}, got {value}")

    return check


class ShapesEpisodesDataset:
    """Episodes of Shapes pairs, one hidden rule each; counts are episodes per split."""

    name: ClassVar[str] = "shapes_episodes"

    @attrs.frozen(kw_only=True)
    class Config:
        size: int = attrs.field(default=64, validator=_check_canvas)
        # One object by default: five pairs already make a sequence five times a pair's length.
        max_objects: int = attrs.field(default=1, validator=_check_range(1, MAX_OBJECTS))
        # Pairs per episode: up to pairs - 1 of them are context for the last.
        pairs: int = attrs.field(default=5, validator=_check_range(1, 64))
        train: int = attrs.field(default=2_000, validator=non_negative)
        val: int = attrs.field(default=64, validator=non_negative)
        test: int = attrs.field(default=64, validator=non_negative)
        seed: int = 0
        rules: tuple[str, ...] = attrs.field(default=KINDS, validator=_check_kinds)

    def __init__(
        self,
        *,
        size: int = 64,
        max_objects: int = 1,
        pairs: int = 5,
        counts: dict[str, int] | None = None,
        seed: int = 0,
        rules: tuple[str, ...] = KINDS,
    ) -> None:
        self.size = size
        self.max_objects = max_objects
        self.pairs = pairs
        self.seed = seed
        self.rules = tuple(rules)
        counts = counts if counts is not None else {"train": 2_000, "val": 64, "test": 64}
        self.counts = {split: n for split, n in counts.items() if n > 0}

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> ShapesEpisodesDataset:
        counts = {"train": config.train, "val": config.val, "test": config.test}
        return cls(
            size=config.size,
            max_objects=config.max_objects,
            pairs=config.pairs,
            counts=counts,
            seed=config.seed,
            rules=config.rules,
        )

    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in SPLITS if split in self.counts)

    def count(self, split: str) -> int:
        """Records (pairs) in the split."""
        return self._episodes(split) * self.pairs

    def rule(self, split: str, episode: int) -> Rule:
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], episode, RULE_STREAM])
        return draw_rule(rng, self.rules)

    def scenes(self, split: str, episode: int, pair: int) -> tuple[Scene, Scene]:
        """(named, drawn) scenes of one pair."""
        rule = self.rule(split, episode)
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], episode, PAIR_STREAM, pair])
        named = sample_named_scene(rng, rule, size=self.size, max_objects=self.max_objects)
        named = Scene(size=named.size, objects=tuple(sorted(named.objects, key=lambda o: CELLS.index(o.spec.cell))))
        return named, apply_rule(named, rule)

    def record(self, split: str, episode: int, pair: int) -> Record:
        from mmgen.api import Record  # here, so registering the plugin does not import torch

        named, drawn = self.scenes(split, episode, pair)
        meta = {
            **named.to_json(),
            "drawn": drawn.to_json(),
            "rule": self.rule(split, episode).to_json(),
            "episode": episode,
            "pair": pair,
        }
        return Record(
            key=f"{split}-{episode:07d}-p{pair}",
            modality="image",
            data=encode_png(render(drawn, self.size)),
            captions=(prompt(named.specs),),
            meta=meta,
        )

    def records(self, split: str) -> Iterator[Record]:
        for episode in range(self._episodes(split)):
            for pair in range(self.pairs):
                yield self.record(split, episode, pair)

    def _episodes(self, split: str) -> int:
        if split not in self.counts:
            raise MissingSplitError(f"shapes_episodes has no split {split!r}; it has {list(self.splits())}")
        return self.counts[split]
