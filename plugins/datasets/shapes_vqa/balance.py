"""Balanced choice of questions within a split (docs/vqa.md, "Balance").

Images come in order; each gets `per_image` distinct questions, of distinct types while the image allows.
Each question's (type, answer) is the one most due among those the image can give: the least `excess`,
the type's count over the least asked type's plus the answer's count over the type's least given answer
(so far in the split); the question is drawn among those with that type and answer, and ties are broken by
the image's own random draws. So types are asked equally often and within a type every answer comes up
equally often, as far as the scenes allow: a choice is only ever among what the image shows, so an answer
few scenes can give (a count of 3) can lag; docs/vqa.md states the tolerance the tests hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import attrs
import numpy as np

from .questions import Candidates


@attrs.frozen(kw_only=True)
class Question:
    question_type: str
    question: str
    answer: str


class Balancer:
    """Counts of the split so far; `choose` picks an image's questions and counts them.

    `universe`: every answer of every question type (questions.answers_of).
    """

    def __init__(self, universe: dict[str, tuple[str, ...]]) -> None:
        self.universe = universe
        self.types: Counter[str] = Counter()
        self.answers: dict[str, Counter[str]] = defaultdict(Counter)

    def choose(self, candidates: Candidates, *, per_image: int, rng: np.random.Generator) -> list[Question]:
        chosen: list[Question] = []
        for _ in range(per_image):
            asked = {q.question for q in chosen}
            left = {
                (question_type, answer): [q for q in questions if q not in asked]
                for question_type, answers in candidates.items()
                for answer, questions in answers.items()
            }
            left = {option: questions for option, questions in left.items() if questions}
            if not left:
                break
            used = {q.question_type for q in chosen}
            fresh = [option for option in left if option[0] not in used]
            question_type, answer = self._most_due(fresh or list(left), rng)
            options = left[(question_type, answer)]
            question = options[int(rng.integers(len(options)))]
            chosen.append(Question(question_type=question_type, question=question, answer=answer))
            self.types[question_type] += 1
            self.answers[question_type][answer] += 1
        return chosen

    def excess(self, question_type: str, answer: str) -> int:
        """How far the type and the answer are ahead of the least asked type and the type's least given answer."""
        type_excess = self.types[question_type] - min(self.types[t] for t in self.universe)
        given = self.answers[question_type]
        return type_excess + given[answer] - min(given[a] for a in self.universe[question_type])

    def _most_due(self, options: list[tuple[str, str]], rng: np.random.Generator) -> tuple[str, str]:
        """The (type, answer) with the least excess; ties in an order the image's draws set."""
        order = [options[i] for i in rng.permutation(len(options))]
        return min(order, key=lambda option: self.excess(*option))
