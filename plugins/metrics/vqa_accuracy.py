"""The `vqa_accuracy` metric: the standard VQA accuracy of generated or classified answers (docs/vqa.md).

For one question with ten human answers, as the official evaluation computes it: for each of the ten
humans, the share min(#other nine humans who gave the predicted answer / 3, 1); the question's accuracy
is the mean of those ten (so an answer two humans gave scores 0.6, not 2/3). Answers are compared after
the official normalisation (vqa_normalise.py).

The metric reads each Generation whose reference holds `answers` (the ten human answers: every VQA record's
meta has them); others are passed over. The prediction is `outputs["answer"]` when there (a classification
head's answer, as text), else the answer in the generated text `outputs[<text>]` (vqa_text.answer_from_text:
what follows `answer:`). Results per task: `<task>/vqa_accuracy`, `<task>/question_type/<type>` and
`<task>/answer_type/<type>` (means over the questions of each type) and `<task>/n`; shares in [0, 1] where
the official script prints percentages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar, Iterable, Sequence

import attrs

from .vqa_normalise import normalise_humans, normalise_prediction
from .vqa_text import answer_from_text

HUMANS = 10
FULL_CREDIT_AT = 3  # humans agreeing with the prediction for full credit


def question_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA accuracy of one predicted answer against its (ten) human answers."""
    predicted = normalise_prediction(prediction)
    humans = normalise_humans(list(answers))
    matches = [human == predicted for human in humans]
    total = sum(matches)
    # Leaving human i out leaves total - matches[i] agreeing humans among the others.
    shares = [min((total - left_out) / FULL_CREDIT_AT, 1.0) for left_out in matches]
    return sum(shares) / len(shares)


def predicted_answer(generation: Any, *, text: str) -> str | None:
    """The answer a generation gives: a classifier's `answer`, else the answer in its generated text."""
    if isinstance(generation.outputs.get("answer"), str):
        return generation.outputs["answer"]
    made = generation.outputs.get(text)
    return answer_from_text(made) if isinstance(made, str) else None


class VqaAccuracy:
    name: ClassVar[str] = "vqa_accuracy"

    @attrs.frozen(kw_only=True)
    class Config:
        text: str = "text"  # the text modality whose generated text holds `answer: ...`

    def __init__(self, *, text: str = "text") -> None:
        self.text = text

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> VqaAccuracy:
        return cls(text=config.text)

    def compute(self, generations: Iterable[Any]) -> dict[str, float]:
        groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for generation in generations:
            answers = generation.reference.get("answers")
            prediction = predicted_answer(generation, text=self.text)
            if not answers or prediction is None:
                continue
            accuracy = question_accuracy(prediction, answers)
            found = groups[generation.task]
            found["vqa_accuracy"].append(accuracy)
            for kind in ("question_type", "answer_type"):
                if generation.reference.get(kind) is not None:
                    found[f"{kind}/{generation.reference[kind]}"].append(accuracy)
        results: dict[str, float] = {}
        for task, found in sorted(groups.items()):
            for name, values in sorted(found.items()):
                results[f"{task}/{name}"] = sum(values) / len(values)
            results[f"{task}/n"] = float(len(found["vqa_accuracy"]))
        return results
