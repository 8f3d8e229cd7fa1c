"""VQA as image+text to text: the one text format a question and its answer share (docs/vqa.md).

`question: <question> answer: <answer>`, e.g. `question: what colour is the circle? answer: red`. A record
stores the whole text as its caption; generation gives the image and `question_prefix` (the text up to and
including `answer:`) as known tokens and the model writes the rest; `answer_from_text` reads the answer
back from the decoded text.
"""

from __future__ import annotations

QUESTION_MARK = "question:"
ANSWER_MARK = "answer:"


def question_prefix(question: str) -> str:
    """The known part of a VQA text: `question: <question> answer:`."""
    return f"{QUESTION_MARK} {' '.join(question.split())} {ANSWER_MARK}"


def qa_text(question: str, answer: str) -> str:
    """The whole VQA text of a question and its answer (whitespace collapsed, as the ingest tidies captions)."""
    return f"{question_prefix(question)} {' '.join(answer.split())}"


def answer_from_text(text: str) -> str:
    """The answer in a generated VQA text: what follows the last `answer:`; the whole text when there is none
    (a model that writes only the answer)."""
    _, found, answer = text.rpartition(ANSWER_MARK)
    return (answer if found else text).strip()
