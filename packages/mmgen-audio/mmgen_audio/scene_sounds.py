"""The `scene_sounds` dataset plugin: each record a Shapes scene, its captions, and the sound the scene makes.

A three-modality set: the picture is the record's main item, the sound one of
its further items (`Record.more`). Each object sounds in turn, in the scene's
object order (use the scenes' `object_order: reading`, as the captions then
follow it too): its shape gives the kind (circle: beep, triangle: chirp,
square: noise burst, cross: click train), its colour the pitch of a beep or
chirp (red, orange, yellow: high; green, blue, purple: low), its size the
loudness (large: loud); every sound is long. Meta: the scene's, plus `events`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Mapping

import attrs
import numpy as np

from mmgen.api import FieldError, Spec, component

from .events import SoundEvent, events_to_json
from .render import render
from .spec import MAX_EVENTS, PITCHED, SAMPLE_RATE
from .wav import wav_bytes

SHAPE_SOUNDS = {"circle": "beep", "triangle": "chirp", "square": "noise burst", "cross": "click train"}
WARM = ("red", "orange", "yellow")
SCENES = {"use": "shapes", "size": 32, "max_objects": 2, "object_order": "reading"}


def scene_events(objects: Any) -> tuple[SoundEvent, ...]:
    """The sound of a scene's objects (Shapes meta `objects`), in their order."""
    events = []
    for obj in objects:
        kind = SHAPE_SOUNDS[obj["shape"]]
        pitch = ("high" if obj["colour"] in WARM else "low") if kind in PITCHED else None
        loudness = "loud" if obj["size"] == "large" else "quiet"
        events.append(SoundEvent(kind=kind, pitch=pitch, loudness=loudness, duration="long"))
    return tuple(events)


class SceneSoundsDataset:
    name: ClassVar[str] = "scene_sounds"

    @attrs.frozen(kw_only=True)
    class Config:
        # The picture-caption data set each record starts from (Shapes; at most two objects: two sounds).
        scenes: Spec = component("datasets", default=SCENES)
        audio: str = "audio"
        seed: int = 0

        def __attrs_post_init__(self) -> None:
            objects = getattr(self.scenes.config, "max_objects", MAX_EVENTS)
            if objects > MAX_EVENTS:
                raise FieldError("scenes", f"a clip holds at most {MAX_EVENTS} sounds: give max_objects <= {MAX_EVENTS}, got {objects}")

    def __init__(self, *, scenes: Any, audio: str = "audio", seed: int = 0) -> None:
        self.scenes, self.audio, self.seed = scenes, audio, seed

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> SceneSoundsDataset:
        from mmgen.api import load_registry

        return cls(scenes=load_registry().build(config.scenes), audio=config.audio, seed=config.seed)

    def splits(self) -> tuple[str, ...]:
        return tuple(self.scenes.splits())

    def count(self, split: str) -> int:
        return self.scenes.count(split)

    def records(self, split: str) -> Iterator[Any]:
        for index, record in enumerate(self.scenes.records(split)):
            yield self.with_sound(record, split=split, index=index)

    def with_sound(self, record: Any, *, split: str, index: int) -> Any:
        events = scene_events(record.meta["objects"])
        if not 1 <= len(events) <= MAX_EVENTS:
            raise ValueError(f"scene_sounds: record {record.key!r} has {len(events)} objects; a clip holds 1 to {MAX_EVENTS}")
        noise_seed = int(np.random.default_rng([self.seed, sorted(self.splits()).index(split), index]).integers(2**31))
        sound = wav_bytes(render(events, seed=noise_seed), SAMPLE_RATE)
        meta: Mapping[str, Any] = {**record.meta, "events": events_to_json(events)}
        return attrs.evolve(record, meta=dict(meta), more={**record.more, self.audio: sound})
