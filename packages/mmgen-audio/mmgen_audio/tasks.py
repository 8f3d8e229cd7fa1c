"""Generation tasks with a sound on one side: t2a, a2t, i2a, a2i (one modality given, one made).

Each Config names the joint space's modalities it uses ("audio", "text",
"image" by default), so a recipe whose tokenizers name them otherwise still runs these tasks.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import attrs

from mmgen.api import GenerationRequest, JointTokenSpace, Segment, TaskBase, blank, known


class _OneToOne(TaskBase):
    """`[BOC] given [BOG] made`: the layout a training task `{context: [given], target: [made]}` shows."""

    given_role: ClassVar[str]
    made_role: ClassVar[str]

    @attrs.frozen(kw_only=True)
    class Config:
        audio: str = "audio"
        text: str = "text"
        image: str = "image"

    def __init__(self, *, audio: str = "audio", text: str = "text", image: str = "image") -> None:
        self.roles = {"audio": audio, "text": text, "image": image}

    @classmethod
    def from_config(cls, config: Any, **_deps: Any) -> Any:
        return cls(**attrs.asdict(config))

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.roles[self.given_role],)

    @property
    def makes(self) -> tuple[str, ...]:
        return (self.roles[self.made_role],)

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        (given,), (made,) = self.needs, self.makes
        return GenerationRequest(segments=[known(inputs[given]), blank(space.space(made), batch, target=True, device=device)])


class TextToAudio(_OneToOne):
    name: ClassVar[str] = "t2a"
    summary: ClassVar[str] = "a sound from its description"
    given_role, made_role = "text", "audio"


class AudioToText(_OneToOne):
    name: ClassVar[str] = "a2t"
    summary: ClassVar[str] = "sound captioning"
    given_role, made_role = "audio", "text"


class ImageToAudio(_OneToOne):
    name: ClassVar[str] = "i2a"
    summary: ClassVar[str] = "the sound a picture makes"
    given_role, made_role = "image", "audio"


class AudioToImage(_OneToOne):
    name: ClassVar[str] = "a2i"
    summary: ClassVar[str] = "a picture of what makes a sound"
    given_role, made_role = "audio", "image"


TASKS = (TextToAudio, AudioToText, ImageToAudio, AudioToImage)
