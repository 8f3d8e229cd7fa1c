"""The `shapes_vqa` dataset plugin: questions about Shapes scenes with exact answers (docs/vqa.md).

The scenes and pixels are the `shapes` plugin's (the same seed and options give the same images); each image
gets `questions_per_image` questions, one record each, chosen so that types and answers are balanced within
a split (balance.py). A record's caption is the VQA text `question: ... answer: ...` and its meta holds the
scene (`size`, `objects`, as a Shapes record's) and the VQA fields every VQA record has (vqav2.py too):
`question`, `answer`, `answers` (ten: here the exact answer ten times), `question_type`, `answer_type`,
`question_id` (the record key) and `image_id` (the Shapes record key of the image).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import attrs
import numpy as np

from mmgen.api import FieldError, MissingSplitError
from mmgen.plugins.metrics.vqa_text import qa_text

from ..shapes.dataset import SPLIT_STREAMS, ShapesDataset, encode_png
from ..shapes.render import render
from ..shapes.spec import all_pairs
from .balance import Balancer, Question
from .questions import ANSWER_TYPES, QUESTION_TYPES, answers_of, scene_questions

if TYPE_CHECKING:
    from mmgen.api import Record

HUMANS = 10  # VQAv2 answers per question
QUESTION_STREAM = 1  # the questions' random draws: a stream of their own beside the scene's


def _per_image(_instance: Any, attribute: Any, value: int) -> None:
    if not 1 <= value <= len(QUESTION_TYPES):
        raise FieldError(attribute.name, f"must be in 1..{len(QUESTION_TYPES)} (one question per type), got {value}")


class ShapesVqaDataset:
    """VQA records over Shapes scenes; the same seed and options give the same bytes."""

    name: ClassVar[str] = "shapes_vqa"

    @attrs.frozen(kw_only=True)
    class Config(ShapesDataset.Config):
        # The scene options are the `shapes` plugin's, checked by its validators; counts are images per split.
        questions_per_image: int = attrs.field(default=3, validator=_per_image)

    def __init__(self, *, shapes: ShapesDataset, questions_per_image: int = 3) -> None:
        self.shapes = shapes
        self.questions_per_image = questions_per_image

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> ShapesVqaDataset:
        return cls(shapes=ShapesDataset.from_config(config), questions_per_image=config.questions_per_image)

    def splits(self) -> tuple[str, ...]:
        return self.shapes.splits()

    def count(self, split: str) -> int:
        """Records (questions) in the split."""
        return self._images(split) * self.questions_per_image

    def records(self, split: str) -> Iterator[Record]:
        balancer = Balancer({t: answers_of(t, max_objects=self.shapes.max_objects) for t in QUESTION_TYPES})
        for index in range(self._images(split)):
            yield from self.image_records(split, index, balancer)

    def image_records(self, split: str, index: int, balancer: Balancer) -> list[Record]:
        """The records of image `index`; `balancer` holds the split's counts of the images before it."""
        from mmgen.api import Record  # here, so registering the plugin does not import torch

        scene, _ = self.shapes.scene(split, index)
        rng = np.random.default_rng([self.shapes.seed, SPLIT_STREAMS[split], index, QUESTION_STREAM])
        candidates = scene_questions(scene.specs, existence_pairs=self.existence_pairs(split))
        chosen = balancer.choose(candidates, per_image=self.questions_per_image, rng=rng)
        image = encode_png(render(scene, self.shapes.size))
        image_id = f"{split}-{index:07d}"
        return [
            Record(
                key=f"{image_id}-q{slot}",
                modality="image",
                data=image,
                captions=(qa_text(question.question, question.answer),),
                meta={**scene.to_json(), **vqa_meta(question, question_id=f"{image_id}-q{slot}", image_id=image_id)},
            )
            for slot, question in enumerate(chosen)
        ]

    def existence_pairs(self, split: str) -> list[tuple[str, str]]:
        """The pairs existence questions may name: no held-out pair in train or val (as their images)."""
        if split in ("train", "val"):
            return [pair for pair in all_pairs() if pair not in self.shapes.held_out]
        return list(all_pairs())

    def _images(self, split: str) -> int:
        if split not in self.shapes.counts:
            raise MissingSplitError(f"shapes_vqa has no split {split!r}; it has {list(self.splits())}")
        return self.shapes.counts[split]


def vqa_meta(question: Question, *, question_id: str, image_id: str) -> dict[str, Any]:
    """The VQA fields of a synthetic record: its exact answer stands for all ten human answers."""
    return {
        "question": question.question,
        "answer": question.answer,
        "answers": [question.answer] * HUMANS,
        "question_type": question.question_type,
        "answer_type": ANSWER_TYPES[question.question_type],
        "question_id": question_id,
        "image_id": image_id,
    }
