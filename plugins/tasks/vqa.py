"""Visual question answering as IT2T: the image and `question: ... answer:` known, the answer generated.

A VQA record's text (the `shapes_vqa` data set, VQAv2 ingestion: docs/vqa.md) is
`question: <question> answer: <answer>`; this task keeps the text up to and
including `answer:` as a known prefix and lets the sampler write the rest and
where it ends, as IT2T completion does. The `vqa_accuracy` metric reads the
words after `answer:` of the generated text.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import attrs

from mmgen.api import Prompt, given
from mmgen.plugins.metrics.vqa_text import ANSWER_MARK

from .builtin import Complete


def known_prefix(text: str) -> str:
    """`question: ... answer:` of a VQA text (ValueError if it has no `answer:`)."""
    head, mark, _ = text.partition(ANSWER_MARK)
    if not mark:
        raise ValueError(f"not a VQA text (no {ANSWER_MARK!r}): {text!r}")
    return head + mark


class VisualQuestionAnswering(Complete):
    """IT2T completion (its request: the known prefix, the rest and its length generated) of a question."""

    name: ClassVar[str] = "vqa"
    summary: ClassVar[str] = "answer a question about an image (the text after `answer:`)"

    def prompts(self, examples: Sequence[Prompt]) -> list[Prompt]:
        """Each image with its question text, up to and including `answer:`."""
        prompts = []
        for e in examples:
            text = given(e, self.text, task=self.name)
            try:
                prefix = known_prefix(text)
            except ValueError as exc:
                raise ValueError(f"task 'vqa', example {e.key!r}: {exc}") from None
            prompts.append(attrs.evolve(e, items={self.image: given(e, self.image, task=self.name), self.text: prefix}))
        return prompts

    def finish(self, modality: str, items: list[Any]) -> list[Any]:
        # Not the caption clean-up of the other tasks: it cuts at the first period, and answers may hold one.
        return [" ".join(item.split()) for item in items] if modality == self.text else items
