"""Every task one IT2IT model covers (MAGVLT slides), each one object that builds its requests.

Every request is one layout a training task produces, with its four special
slots `[BOC][BEGIN_a] a [BOG][BEGIN_b] b` (MAGVLT sec. 3.1; the official
magvlt/models/maskgit/maskgit.py `_get_input` builds only these, special
positions 0, 1 then 2, 3):

- T2I `[BOC] text [BOG] image`, its target masked at any ratio: t2i, and it2i
  (the image partly given, as the official sampling_it2i.py edits).
- I2T `[BOC] image [BOG] text`: i2t, and it2t (a given prefix).
- IT2IT, I2T's layout with the image context partly MASK (`mask_context`): one
  r per row masks the image cos(pi r / 2) of its tokens and the text r, so it
  shows a partly MASK image beside a (nearly) wholly MASK caption, and a wholly
  MASK image beside a nearly known caption, but never both wholly MASK.
- Condition dropout (the train stage's `condition_dropout`; MAGVLT: 0) shows
  either layout with its whole context MASK beside a target at any ratio.

So the tasks without a natural condition are:

- inpaint / outpaint: T2I with a dropped caption, `[BOC] MASK(text) [BOG]
  image(partly given)`, trained by condition dropout. A model trained without it
  but with IT2IT takes a second route: caption the visible image in the IT2IT
  layout `[BOC] image(partly MASK) [BOG] text`, then fill the region in the T2I
  layout under that caption (it2i); the caption is discarded.
- t2t: I2T with a dropped image, `[BOC] MASK(image) [BOG] text(partly given)`,
  trained by condition dropout, and by IT2IT when its r hides the whole image.
- t2it: the image by T2I from the prompt, then its caption by I2T from that
  image (a second request, `follow_up`): `[BOC] T [BOC] I [BOG] T`, the old
  single-sequence layout, is no training layout (a fifth special slot).
- unconditional: the image by T2I with a dropped caption, then its caption by
  I2T. The joint alternative, IT2IT's `[BOC] MASK(image) [BOG] MASK(text)`,
  is not what IT2IT trains (its one r never masks both wholly), so a model
  without condition dropout has no trained way to it and is refused.

The generation pipeline checks each request against the layouts the model
recorded (mmgen.generation.layouts) and refuses, or reroutes, a task whose
layout the model never trained.

Each task's Config names the modalities it uses (the joint space's names,
"image" and "text" by default), so a recipe whose tokenizers name them
otherwise still runs these tasks.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Mapping, Sequence

import attrs

from mmgen.api import (
    CENTRE,
    GenerationRequest,
    JointTokenSpace,
    Prompt,
    Segment,
    TaskBase,
    blank,
    box_mask,
    given,
    check_box,
    known,
    partial_text,
    region_target,
)

from .text_cleanup import clean_caption


def _box(value: Any) -> tuple[float, float, float, float]:
    return check_box(tuple(float(v) for v in value))


def infill_span(content_length: int) -> tuple[int, int]:
    """[start, stop) of the middle half of `content_length` caption tokens (T2T infilling)."""
    start = content_length // 4
    return start, start + (content_length + 1) // 2


def half_words(text: str) -> str:
    """The first half of a caption's words (at least one): IT2T's partial text to complete."""
    words = text.split()
    return " ".join(words[: max(1, len(words) // 2)])


class _ImageText(TaskBase):
    """A task over an image and a text modality; generated captions are cleaned up as the MAGVLT authors do."""

    @attrs.frozen(kw_only=True)
    class Config:
        image: str = "image"
        text: str = "text"

    needs_roles: ClassVar[tuple[str, ...]] = ()  # "image" / "text", named in the joint space by the Config
    makes_roles: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, image: str = "image", text: str = "text") -> None:
        self.image, self.text = image, text

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(getattr(self, role) for role in self.needs_roles)

    @property
    def makes(self) -> tuple[str, ...]:
        return tuple(getattr(self, role) for role in self.makes_roles)

    @classmethod
    def from_config(cls, config: Any, **_deps: Any) -> Any:
        return cls(**attrs.asdict(config))

    def finish(self, modality: str, items: list[Any]) -> list[Any]:
        return [clean_caption(item) for item in items] if modality == self.text else items


class _RegionTask(_ImageText):
    """A task that regenerates a region of an image (a box in image fractions; default the centre half)."""

    keep_inside: ClassVar[bool] = False

    @attrs.frozen(kw_only=True)
    class Config:
        image: str = "image"
        text: str = "text"
        region: tuple[float, float, float, float] = attrs.field(default=CENTRE, converter=_box)

    def __init__(self, *, image: str = "image", text: str = "text", region: Sequence[float] = CENTRE) -> None:
        super().__init__(image=image, text=text)
        self.region = _box(region)

    def describe(self) -> dict[str, Any]:
        return {"region": list(self.region)}

    def _image_target(self, image: Segment, space: JointTokenSpace, *, target: bool = True) -> Any:
        inside = box_mask(self.region, tuple(space.space(self.image).shape))
        return region_target(image, inside, keep_inside=self.keep_inside, target=target)


class TextToImage(_ImageText):
    name: ClassVar[str] = "t2i"
    summary: ClassVar[str] = "text-guided image generation"
    needs_roles = ("text",)
    makes_roles = ("image",)

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        return GenerationRequest(
            segments=[known(inputs[self.text]), blank(space.space(self.image), batch, target=True, device=device)]
        )


class ImageToText(_ImageText):
    name: ClassVar[str] = "i2t"
    summary: ClassVar[str] = "image captioning"
    needs_roles = ("image",)
    makes_roles = ("text",)

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        return GenerationRequest(
            segments=[known(inputs[self.image]), blank(space.space(self.text), batch, target=True, device=device)]
        )


class Inpaint(_RegionTask):
    name: ClassVar[str] = "inpaint"
    summary: ClassVar[str] = "regenerate the region of an image"
    needs_roles = ("image",)
    makes_roles = ("image",)
    instead = ("it2i",)
    via_caption: bool = False  # the route for a model without condition dropout: caption first (IT2IT), then T2I

    def routes(self) -> list[Any]:
        """T2I with a dropped caption (condition dropout); else a caption of the visible image, then T2I."""
        second = copy.copy(self)
        second.via_caption = True
        return [self, second]

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        image = inputs[self.image]
        if self.via_caption:  # IT2IT: the image with its region MASK as context, the caption generated
            caption = blank(space.space(self.text), batch, target=True, device=device)
            return GenerationRequest(segments=[self._image_target(image, space, target=False), caption])
        dropped = blank(space.space(self.text), batch, target=False, device=device)
        return GenerationRequest(segments=[dropped, self._image_target(image, space)])

    def follow_up(
        self,
        inputs: Mapping[str, Segment],
        made: Mapping[str, Segment],
        *,
        batch: int,
        space: JointTokenSpace,
        device: Any,
    ) -> GenerationRequest | None:
        if not self.via_caption or self.image in made:
            return None
        # T2I under the caption just made, the region regenerated (it2i).
        return GenerationRequest(segments=[known(made[self.text]), self._image_target(inputs[self.image], space)])


class Outpaint(Inpaint):
    name: ClassVar[str] = "outpaint"
    summary: ClassVar[str] = "regenerate all but the region of an image"
    keep_inside: ClassVar[bool] = True


class Edit(_RegionTask):
    name: ClassVar[str] = "it2i"
    summary: ClassVar[str] = "text-guided editing of the region of an image"
    needs_roles = ("image", "text")
    makes_roles = ("image",)

    def prompts(self, examples: Sequence[Prompt]) -> list[Prompt]:
        """Each image edited under the next example's caption."""
        return [
            attrs.evolve(
                e,
                items={
                    self.image: given(e, self.image, task=self.name),
                    self.text: given(examples[(i + 1) % len(examples)], self.text, task=self.name),
                },
            )
            for i, e in enumerate(examples)
        ]

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        return GenerationRequest(segments=[known(inputs[self.text]), self._image_target(inputs[self.image], space)])


class TextInfill(_ImageText):
    name: ClassVar[str] = "t2t"
    summary: ClassVar[str] = "text infilling: the middle half of the caption"
    needs_roles = ("text",)
    makes_roles = ("text",)
    instead = ("it2t",)

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        text = inputs[self.text]
        dropped = blank(space.space(self.image), batch, target=False, device=device)
        return GenerationRequest(
            segments=[dropped, partial_text(text, space.space(self.text), span=infill_span, lengths_known=True)]
        )


class Complete(_ImageText):
    name: ClassVar[str] = "it2t"
    summary: ClassVar[str] = "complete a partial text about an image"
    needs_roles = ("image", "text")
    makes_roles = ("text",)

    def prompts(self, examples: Sequence[Prompt]) -> list[Prompt]:
        """Each image with the first half of its caption's words."""
        return [
            attrs.evolve(
                e,
                items={
                    self.image: given(e, self.image, task=self.name),
                    self.text: half_words(given(e, self.text, task=self.name)),
                },
            )
            for e in examples
        ]

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        # The given text is a known prefix; the model completes it and predicts where it ends.
        text = partial_text(inputs[self.text], space.space(self.text), span=lambda n: (n, n), lengths_known=False)
        return GenerationRequest(segments=[known(inputs[self.image]), text])


class _ImageThenCaption(_ImageText):
    """The image by one request, then its caption by I2T from that image (a second request)."""

    makes_roles = ("image", "text")

    def follow_up(
        self,
        inputs: Mapping[str, Segment],
        made: Mapping[str, Segment],
        *,
        batch: int,
        space: JointTokenSpace,
        device: Any,
    ) -> GenerationRequest | None:
        if self.text in made:
            return None
        caption = blank(space.space(self.text), batch, target=True, device=device)
        return GenerationRequest(segments=[known(made[self.image]), caption])


class TextToImageText(_ImageThenCaption):
    name: ClassVar[str] = "t2it"
    summary: ClassVar[str] = "an image and its caption from a prompt"
    needs_roles = ("text",)

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        # T2I; the caption follows from the image alone (I2T), as training shows it.
        return GenerationRequest(
            segments=[known(inputs[self.text]), blank(space.space(self.image), batch, target=True, device=device)]
        )


class Unconditional(_ImageThenCaption):
    name: ClassVar[str] = "unconditional"
    summary: ClassVar[str] = "an image-text pair from nothing"
    needs_roles = ()
    instead = ("t2it",)

    def request(
        self, inputs: Mapping[str, Segment], *, batch: int, space: JointTokenSpace, device: Any
    ) -> GenerationRequest:
        # T2I with a dropped caption (the layout condition dropout trains); I2T follows.
        dropped = blank(space.space(self.text), batch, target=False, device=device)
        return GenerationRequest(segments=[dropped, blank(space.space(self.image), batch, target=True, device=device)])


TASKS = (TextToImage, ImageToText, Inpaint, Outpaint, TextInfill, Edit, Complete, TextToImageText, Unconditional)
