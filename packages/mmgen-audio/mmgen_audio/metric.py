"""The `audio_accuracy` metric: generated sounds and sound captions judged by the Sounds oracles.

A generation that makes a sound is judged against its record's events (meta
`events`); one that captions a given sound is judged the same way through the
caption parser. Returns, per task present: `<task>/accuracy`, one share per
check (kind, pitch, loudness, duration, count; captions also parsed),
`<task>/events_<k>` (accuracy over references with k events) and `<task>/n`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, Iterable

import attrs
import numpy as np


class AudioAccuracy:
    name: ClassVar[str] = "audio_accuracy"

    @attrs.frozen(kw_only=True)
    class Config:
        audio: str = "audio"
        text: str = "text"

    def __init__(self, *, audio: str = "audio", text: str = "text") -> None:
        self.audio, self.text = audio, text

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> AudioAccuracy:
        return cls(audio=config.audio, text=config.text)

    def judge(self, generation: Any) -> Any:
        from .accuracy import caption_correct, reference_events, sound_correct

        events = reference_events(generation.reference)
        if events is None:
            return None
        if self.audio in generation.outputs:
            return sound_correct(np.asarray(generation.outputs[self.audio]), events)
        if self.text in generation.outputs and self.audio in generation.inputs:
            return caption_correct(str(generation.outputs[self.text]), events)
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
            found[f"events_{judgement.n_events}"].append(judgement.correct)
        results: dict[str, float] = {}
        for task, found in sorted(groups.items()):
            for name, values in sorted(found.items()):
                results[f"{task}/{name}"] = float(np.mean(values))
            results[f"{task}/n"] = float(len(found["accuracy"]))
        return results
