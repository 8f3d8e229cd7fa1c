"""The `shapes` dataset plugin: procedural image-caption records (docs/shapes.md)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, ClassVar, Iterator

import attrs
import numpy as np
from PIL import Image

from mmgen.api import FieldError, MissingSplitError, non_negative

from .captions import make_captions
from .render import render, sample_scene
from .scene import Scene
from .spec import CANVAS_SIZES, CELLS, MAX_OBJECTS, all_pairs, parse_pair

if TYPE_CHECKING:
    from mmgen.api import Record

# Each split draws from its own seed stream, so a split's records do not depend on
# the other splits' counts.
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2, "holdout": 3}
# `drawn`: objects in the order their cells were drawn (random); `reading`: by cell,
# row by row, so the `full` caption (and evaluation prompt) of a scene is unique.
OBJECT_ORDERS = ("drawn", "reading")


def _one_of(field: str, value: object, allowed: object) -> None:
    if value not in allowed:
        raise FieldError(field, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _pairs(field: str, pairs: tuple[str, ...]) -> None:
    for index, pair in enumerate(pairs):
        try:
            parse_pair(pair)
        except ValueError as exc:
            raise FieldError(f"{field}[{index}]", str(exc)) from None


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class ShapesDataset:
    """Shapes records per split; the same seed and options give the same bytes.

    With `hold_out`, `holdout_pairs` never appear in train or val; test draws from
    every pair, and the extra `holdout` split puts at least one held-out pair in
    every scene, to measure compositional generalisation.

    `object_order` sets the order of a scene's objects, which the `full` caption
    follows: `drawn` (random) gives a two-object image two equally right full
    captions, which a parallel caption decoder can mix; `reading` lists objects
    by cell, row by row, so each image has one. The pixels are the same either way.
    """

    name: ClassVar[str] = "shapes"

    @attrs.frozen(kw_only=True)
    class Config:
        # Checked when the recipe loads, so a bad value is reported at its YAML path before any work.
        size: int = attrs.field(default=64, validator=lambda _, a, v: _one_of(a.name, v, CANVAS_SIZES))
        max_objects: int = attrs.field(default=2, validator=lambda _, a, v: _one_of(a.name, v, range(1, MAX_OBJECTS + 1)))
        train: int = attrs.field(default=10_000, validator=non_negative)
        val: int = attrs.field(default=500, validator=non_negative)
        test: int = attrs.field(default=500, validator=non_negative)
        holdout: int = attrs.field(default=500, validator=non_negative)
        seed: int = 0
        holdout_pairs: tuple[str, ...] = attrs.field(default=("yellow triangle",), validator=lambda _, a, v: _pairs(a.name, v))
        hold_out: bool = True
        object_order: str = attrs.field(default="drawn", validator=lambda _, a, v: _one_of(a.name, v, OBJECT_ORDERS))

    def __init__(
        self,
        *,
        size: int = 64,
        max_objects: int = 2,
        counts: dict[str, int] | None = None,
        seed: int = 0,
        holdout_pairs: tuple[str, ...] = ("yellow triangle",),
        hold_out: bool = True,
        object_order: str = "drawn",
    ) -> None:
        if object_order not in OBJECT_ORDERS:
            raise ValueError(f"shapes: object_order must be one of {OBJECT_ORDERS}, got {object_order!r}")
        if size not in CANVAS_SIZES:
            raise ValueError(f"shapes: size must be one of {CANVAS_SIZES}, got {size}")
        if not 1 <= max_objects <= MAX_OBJECTS:
            raise ValueError(f"shapes: max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
        counts = dict(counts if counts is not None else {"train": 10_000, "val": 500, "test": 500, "holdout": 500})
        unknown = set(counts) - set(SPLIT_STREAMS)
        if unknown:
            raise ValueError(f"shapes: unknown split(s) {sorted(unknown)}; splits are {list(SPLIT_STREAMS)}")
        self.size = size
        self.max_objects = max_objects
        self.seed = seed
        self.object_order = object_order
        self.held_out = tuple(parse_pair(p) for p in holdout_pairs) if hold_out else ()
        if not self.held_out:
            counts.pop("holdout", None)
        if set(self.held_out) == set(all_pairs()):
            raise ValueError("shapes: holding out every colour-shape pair leaves nothing to train on")
        self.counts = {split: n for split, n in counts.items() if n > 0}

    @classmethod
    def from_config(cls, config: Config, **deps) -> ShapesDataset:
        counts = {"train": config.train, "val": config.val, "test": config.test, "holdout": config.holdout}
        return cls(
            size=config.size,
            max_objects=config.max_objects,
            counts=counts,
            seed=config.seed,
            holdout_pairs=config.holdout_pairs,
            hold_out=config.hold_out,
            object_order=config.object_order,
        )

    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in SPLIT_STREAMS if split in self.counts)

    def count(self, split: str) -> int:
        self._check_split(split)
        return self.counts[split]

    def scene(self, split: str, index: int) -> tuple[Scene, np.random.Generator]:
        """The scene of record `index` and the generator positioned after drawing it."""
        self._check_split(split)
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], index])
        if split in ("train", "val"):
            allowed = [pair for pair in all_pairs() if pair not in self.held_out]
            scene = sample_scene(rng, size=self.size, max_objects=self.max_objects, allowed_pairs=allowed)
        else:
            required = self.held_out if split == "holdout" else None
            scene = sample_scene(rng, size=self.size, max_objects=self.max_objects, required_pairs=required)
        if self.object_order == "reading":
            by_cell = sorted(scene.objects, key=lambda o: CELLS.index(o.spec.cell))
            scene = Scene(size=scene.size, objects=tuple(by_cell))
        return scene, rng

    def record(self, split: str, index: int) -> Record:
        from mmgen.api import Record  # here, so registering the plugin does not import torch

        scene, rng = self.scene(split, index)
        captions = make_captions(scene, rng)
        data = encode_png(render(scene, self.size))
        return Record(key=f"{split}-{index:07d}", modality="image", data=data, captions=captions, meta=scene.to_json())

    def records(self, split: str) -> Iterator[Record]:
        for index in range(self.count(split)):
            yield self.record(split, index)

    def _check_split(self, split: str) -> None:
        if split not in self.counts:
            raise MissingSplitError(f"shapes has no split {split!r}; it has {list(self.splits())}")
