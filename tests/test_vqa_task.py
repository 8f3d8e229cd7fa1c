"""The `vqa` generation task: the question up to `answer:` is known, the answer is the sampler's."""

import numpy as np
import pytest

from mmgen.generation.task import Prompt
from mmgen.plugins.tasks.vqa import VisualQuestionAnswering, known_prefix


def test_the_known_text_ends_at_answer():
    assert known_prefix("question: what colour is the circle? answer: red") == (
        "question: what colour is the circle? answer:"
    )


def test_prompts_keep_the_image_and_the_question_only():
    image = np.zeros((4, 4, 3), np.uint8)
    example = Prompt(key="r1", items={"image": image, "text": "question: how many squares are there? answer: 2"})
    (prompt,) = VisualQuestionAnswering().prompts([example])
    assert prompt.key == "r1" and prompt.items["image"] is image
    assert prompt.items["text"] == "question: how many squares are there? answer:"


def test_a_text_without_an_answer_mark_names_the_example():
    example = Prompt(key="r7", items={"image": np.zeros((4, 4, 3), np.uint8), "text": "a large red circle"})
    with pytest.raises(ValueError, match=r"task 'vqa', example 'r7': not a VQA text \(no 'answer:'\)"):
        VisualQuestionAnswering().prompts([example])
