"""The `sounds` dataset plugin: procedural sound clips with captions (README.md, "Sounds")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import attrs
import numpy as np

from mmgen.api import FieldError, MissingSplitError, non_negative

from .captions import make_captions
from .events import SoundEvent, events_to_json
from .render import render
from .spec import DURATIONS, KINDS, LOUDNESS, MAX_EVENTS, PITCHED, PITCHES, SAMPLE_RATE
from .wav import wav_bytes

if TYPE_CHECKING:
    from mmgen.api import Record

# Each split draws from its own seed stream, so a split's records do not depend on the other splits' counts.
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def _events_allowed(_instance: Any, attribute: Any, value: int) -> None:
    if not 1 <= value <= MAX_EVENTS:
        raise FieldError(attribute.name, f"must be in 1..{MAX_EVENTS}, got {value}")


def sample_events(rng: np.random.Generator, *, max_events: int) -> tuple[SoundEvent, ...]:
    count = int(rng.integers(1, max_events + 1))
    events = []
    for _ in range(count):
        kind = str(rng.choice(KINDS))
        pitch = str(rng.choice(list(PITCHES))) if kind in PITCHED else None
        loudness, duration = str(rng.choice(list(LOUDNESS))), str(rng.choice(list(DURATIONS)))
        events.append(SoundEvent(kind=kind, pitch=pitch, loudness=loudness, duration=duration))
    return tuple(events)


class SoundsDataset:
    """Sound-caption records per split; the same seed and options give the same bytes.

    Each record: a 16-bit mono WAV of 1.024 s at 8 kHz, four captions (captions.py; the
    first states everything) and meta `{"events": [...]}`, what the oracle reads back.
    """

    name: ClassVar[str] = "sounds"

    @attrs.frozen(kw_only=True)
    class Config:
        max_events: int = attrs.field(default=2, validator=_events_allowed)
        train: int = attrs.field(default=4000, validator=non_negative)
        val: int = attrs.field(default=128, validator=non_negative)
        test: int = attrs.field(default=128, validator=non_negative)
        seed: int = 0
        modality: str = "audio"

    def __init__(
        self, *, max_events: int = 2, counts: dict[str, int] | None = None, seed: int = 0, modality: str = "audio"
    ) -> None:
        if not 1 <= max_events <= MAX_EVENTS:
            raise ValueError(f"sounds: max_events must be in 1..{MAX_EVENTS}, got {max_events}")
        counts = dict(counts if counts is not None else {"train": 4000, "val": 128, "test": 128})
        unknown = set(counts) - set(SPLIT_STREAMS)
        if unknown:
            raise ValueError(f"sounds: unknown split(s) {sorted(unknown)}; splits are {list(SPLIT_STREAMS)}")
        self.max_events, self.seed, self.modality = max_events, seed, modality
        self.counts = {split: n for split, n in counts.items() if n > 0}

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> SoundsDataset:
        counts = {"train": config.train, "val": config.val, "test": config.test}
        return cls(max_events=config.max_events, counts=counts, seed=config.seed, modality=config.modality)

    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in SPLIT_STREAMS if split in self.counts)

    def count(self, split: str) -> int:
        self._check_split(split)
        return self.counts[split]

    def events(self, split: str, index: int) -> tuple[tuple[SoundEvent, ...], int]:
        """Record `index`'s events and the seed of its noise."""
        self._check_split(split)
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], index])
        events = sample_events(rng, max_events=self.max_events)
        return events, int(rng.integers(2**31))

    def record(self, split: str, index: int) -> Record:
        from mmgen.api import Record  # here, so registering the plugin does not import torch

        events, noise_seed = self.events(split, index)
        data = wav_bytes(render(events, seed=noise_seed), SAMPLE_RATE)
        meta = {"events": events_to_json(events)}
        return Record(key=f"{split}-{index:07d}", modality=self.modality, data=data, captions=make_captions(events), meta=meta)

    def records(self, split: str) -> Iterator[Record]:
        for index in range(self.count(split)):
            yield self.record(split, index)

    def _check_split(self, split: str) -> None:
        if split not in self.counts:
            raise MissingSplitError(f"sounds has no split {split!r}; it has {list(self.splits())}")
