"""The answer vocabulary and soft targets of VQA as classification (a head over a fixed set of answers).

The vocabulary: the `top` most frequent answers among the human answers of the training questions, each
normalised as the evaluation normalises a prediction (vqa_normalise.normalise_prediction), so a class the
head predicts is scored as written; ties in frequency go in alphabetical order. A question's soft target
gives each class the VQA accuracy that answer would score (vqa_accuracy.question_accuracy), so a
classifier trained on it (binary cross-entropy per class) aims at the metric itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

from .vqa_accuracy import question_accuracy
from .vqa_normalise import normalise_humans, normalise_prediction


def answer_vocabulary(answer_lists: Iterable[Sequence[str]], *, top: int) -> list[str]:
    """The `top` most frequent normalised answers over every question's human answers."""
    counts: Counter[str] = Counter()
    for answers in answer_lists:
        counts.update(normalise_prediction(answer) for answer in answers)
    counts.pop("", None)
    return [answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]]


def soft_targets(answers: Sequence[str], classes: Mapping[str, int]) -> dict[int, float]:
    """{class: score > 0} for one question: the VQA accuracy of answering with that class's answer.

    `classes`: {answer: class index} over answer_vocabulary's (normalised) answers, built once. Only a class
    whose answer equals one of the (normalised) human answers can score, so only those are looked up.
    """
    found = {human for human in normalise_humans(list(answers)) if human in classes}
    return {classes[answer]: question_accuracy(answer, answers) for answer in sorted(found)}
