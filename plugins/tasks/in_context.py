"""In-context generation: k context (image, caption) pairs, then a query (docs/in_context.md).

`[BOC] image_1 text_1 ... image_k text_k text [BOG] image` (in-context T2I:
`direction: t2i`, the query a caption) or `... image_k text_k image [BOG] text`
(in-context I2T: `direction: i2t`, the query an image); k = 0 is plain T2I or
I2T. The model must read the rule the context pairs follow (a colour drawn as
another, ...) to answer the query. A model runs it only when trained on those
layouts (the `in_context_finetune` stage records them).

The context pairs are no prompt items (a prompt holds one item per modality):
`with_context` gives the task its encoded pairs, either one row each (every
prompt shares them: `mmgen generate --context IMAGE TEXT ...`) or one row per
prompt (each prompt its own episode's pairs: the in_context_evaluate stage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs

from mmgen.api import GenerationRequest, JointTokenSpace, Segment, blank, known

from .builtin import _ImageText

Direction = Literal["t2i", "i2t"]


class InContext(_ImageText):
    """k context pairs and a query caption -> image, or a query image -> caption."""

    name: ClassVar[str] = "in_context"
    summary: ClassVar[str] = "in-context T2I or I2T: context image-caption pairs (--context), then the query"

    @attrs.frozen(kw_only=True)
    class Config:
        image: str = "image"
        text: str = "text"
        direction: Direction = "t2i"

    def __init__(self, *, image: str = "image", text: str = "text", direction: Direction = "t2i") -> None:
        super().__init__(image=image, text=text)
        if direction not in ("t2i", "i2t"):
            raise ValueError(f"task 'in_context': direction must be t2i or i2t, got {direction!r}")
        self.direction = direction
        self.context: tuple[dict[str, Segment], ...] = ()

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.text,) if self.direction == "t2i" else (self.image,)

    @property
    def makes(self) -> tuple[str, ...]:
        return (self.image,) if self.direction == "t2i" else (self.text,)

    def with_context(self, pairs: Sequence[Mapping[str, Segment]]) -> InContext:
        """This task with `pairs` (each: its image and text segment, of 1 row or one row per prompt) as context."""
        task = InContext(image=self.image, text=self.text, direction=self.direction)
        for index, pair in enumerate(pairs):
            missing = [m for m in (self.image, self.text) if m not in pair]
            if missing:
                raise ValueError(f"task 'in_context': context pair {index} has no {missing[0]!r} segment")
        task.context = tuple({m: pair[m] for m in (self.image, self.text)} for pair in pairs)
        return task

    def describe(self) -> dict[str, Any]:
        return {"context_pairs": len(self.context), "direction": self.direction}

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        segments = [known(_rows(pair[m], batch).to(device)) for pair in self.context for m in (self.image, self.text)]
        (query,), (made,) = self.needs, self.makes
        segments += [known(inputs[query]), blank(space.space(made), batch, target=True, device=device)]
        return GenerationRequest(segments=segments)


def _rows(segment: Segment, batch: int) -> Segment:
    """`segment` for a request of `batch` rows: as is, a single row repeated, or (a one-row request: the
    pipeline planning layouts) its first row."""
    if segment.batch_size == batch:
        return segment
    if segment.batch_size == 1:
        return Segment(
            modality=segment.modality,
            tokens=segment.tokens.expand(batch, -1),
            lengths=segment.lengths.expand(batch),
        )
    if batch == 1:
        return segment.select(slice(0, 1))
    raise ValueError(f"task 'in_context': context of {segment.batch_size} rows for a request of {batch}")


def encode_pairs(tokenizers: Mapping[str, Any], pairs: Sequence[Sequence[Any]], *, image: str, text: str) -> list[dict]:
    """Context pairs encoded: `pairs[j]` = (image items, caption strings) of pair j, one item per row."""
    import torch

    encoded = []
    for images, captions in pairs:
        items = torch.stack(list(images)) if torch.is_tensor(images[0]) else list(images)
        encoded.append({image: tokenizers[image].encode(items), text: tokenizers[text].encode(list(captions))})
    return encoded
