"""Balanced choice of questions within a split (docs/vqa.md, "Balance").

Images come in order; each gets `per_image` distinct questions. For each question the type is the one asked
least so far in the split among the types the image can answer (not yet asked of this image while another
type is left), and the answer is the one given least so far for that type among the answers the image can
give; the question is drawn among those with that answer. Ties are broken by the image's own random draws.
So types are asked equally often, and within a type every answer comes up equally often, as far as the
scenes allow: a choice is only ever among what the image shows, so an answer few scenes can give (a count
of 3) can lag; docs/vqa.md states the tolerance the tests hold.
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
    """Counts of the split so far; `choose` picks an image's questions and counts them."""

    def __init__(self) -> None:
        self.types: Counter[str] = Counter()
        self.answers: dict[str, Counter[str]] = defaultdict(Counter)

    def choose(self, candidates: Candidates, *, per_image: int, rng: np.random.Generator) -> list[Question]:
        chosen: list[Question] = []
        asked: set[str] = set()
        for _ in range(per_image):
            left = {
                question_type: {a: [q for q in qs if q not in asked] for a, qs in answers.items()}
                for question_type, answers in candidates.items()
            }
            left = {t: {a: qs for a, qs in answers.items() if qs} for t, answers in left.items()}
            left = {t: answers for t, answers in left.items() if answers}
            if not left:
                break
            fresh = [t for t in left if t not in {q.question_type for q in chosen}]
            question_type = self._least(self.types, fresh or list(left), rng)
            answer = self._least(self.answers[question_type], list(left[question_type]), rng)
            options = left[question_type][answer]
            question = options[int(rng.integers(len(options)))]
            chosen.append(Question(question_type=question_type, question=question, answer=answer))
            asked.add(question)
            self.types[question_type] += 1
            self.answers[question_type][answer] += 1
        return chosen

    @staticmethod
    def _least(counts: Counter[str], options: list[str], rng: np.random.Generator) -> str:
        """The option counted least; ties in an order the image's draws set."""
        order = [options[i] for i in rng.permutation(len(options))]
        return min(order, key=lambda option: counts[option])
