"""VQA accuracy and the official answer normalisation, on hand-made cases with hand-computed values."""

import pytest

from mmgen.api import Generation
from mmgen.plugins.metrics.vqa_accuracy import VqaAccuracy, question_accuracy
from mmgen.plugins.metrics.vqa_normalise import normalise_humans, normalise_prediction, punctuation
from mmgen.plugins.metrics.vqa_text import answer_from_text, qa_text, question_prefix
from mmgen.plugins.metrics.vqa_vocabulary import answer_vocabulary, soft_targets


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        ("\tYes\n", "yes"),
        ("yes?", "yes"),  # '?' beside no space: replaced by a space, which the word split drops
        ("red, blue", "red blue"),  # ', ' has the comma beside a space: deleted
        ("red,blue", "red blue"),  # no space beside it and no digit,digit: replaced by a space
        ("1,000", "1000"),  # a comma between digits: every mark deleted
        ("x-ray", "x ray"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("yes.", "yes"),
        ("mr. t", "mr t"),
        ("two", "2"),
        ("None", "0"),
        ("Ten dogs", "10 dogs"),
        ("a dog", "dog"),
        ("The Cat", "cat"),
        ("an apple on the table", "apple on table"),
        ("dont", "don't"),
        ("whats that", "what's that"),
        ("somebody'd", "somebodyd"),  # the official table maps this one the wrong way round
        ("Im", "im"),  # its key `Im` has a capital, never met after lower-casing
    ],
)
def test_prediction_normalisation(answer, normalised):
    assert normalise_prediction(answer) == normalised


def test_punctuation_details():
    # Each mark on its own: "(" has a space before it and is deleted;
    assert punctuation("a (b)") == "a b "  # ")" has no space beside it: replaced by one
    assert punctuation("(b)") == " b "
    # At most 32 periods are deleted (the official call passes re.UNICODE, 32, as the count).
    assert punctuation("." * 40) == "." * 8


def test_human_answers_are_normalised_only_when_they_disagree():
    assert normalise_humans(["Yes."] * 10) == ["Yes."] * 10
    # Disagreeing humans get the punctuation rule only: no digit words, articles or case.
    assert normalise_humans(["Two!", "2", "a dog"] + ["2"] * 7) == ["Two ", "2", "a dog"] + ["2"] * 7


def test_accuracy_hand_computed():
    # All ten agree: each left-out subset of nine has 9 >= 3 matches: 1.
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    # 2 of 10 gave it. Leaving out one of the 8 others: 2 matches among 9 -> 2/3; leaving out one of the 2:
    # 1 match -> 1/3. Mean (8 * 2/3 + 2 * 1/3) / 10 = (16/3 + 2/3) / 10 = 0.6, not 2/3.
    assert question_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx(0.6)
    # 3 of 10: (7 * min(3/3, 1) + 3 * 2/3) / 10 = (7 + 2) / 10 = 0.9.
    assert question_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    # 4 of 10: every subset keeps at least 3 -> 1.
    assert question_accuracy("red", ["red"] * 4 + ["blue"] * 6) == 1.0
    # 1 of 10: (9 * 1/3 + 1 * 0) / 10 = 0.3.
    assert question_accuracy("red", ["red"] + ["blue"] * 9) == pytest.approx(0.3)
    assert question_accuracy("green", ["red"] * 10) == 0.0
    # The prediction is normalised: "Two" -> "2".
    assert question_accuracy("Two", ["2"] * 10) == 1.0
    # Disagreeing humans: "2" x 2 and "2." x 1 (-> "2" by punctuation) are 3 matches -> 0.9.
    assert question_accuracy("two", ["2", "2", "2."] + ["3"] * 7) == pytest.approx(0.9)
    # Unanimous humans are not normalised (official): "Yes" never equals the normalised "yes".
    assert question_accuracy("yes", ["Yes"] * 10) == 0.0


def test_text_format():
    assert qa_text("what colour is  the circle?", "red") == "question: what colour is the circle? answer: red"
    assert question_prefix("is it?") == "question: is it? answer:"
    assert answer_from_text("question: what colour is the circle? answer: dark red ") == "dark red"
    assert answer_from_text("red") == "red"


def generation(text=None, answer=None, **reference):
    outputs = {"text": text} if text is not None else {}
    if answer is not None:
        outputs["answer"] = answer
    return Generation(task="vqa", key="k", inputs={}, outputs=outputs, reference=reference)


def test_metric_reads_generated_text_and_class_answers():
    humans = ["red"] * 2 + ["blue"] * 8
    made = [
        generation("question: what colour? answer: red", answers=humans, question_type="colour", answer_type="other"),
        generation(answer="Blue", answers=humans, question_type="colour", answer_type="other"),
        generation("question: is it? answer: no", answers=["yes"] * 10, question_type="existence", answer_type="y/n"),
        generation("a caption with no answers to compare"),  # no reference answers: passed over
    ]
    assert VqaAccuracy().compute(made) == {
        "vqa/vqa_accuracy": pytest.approx((0.6 + 1.0 + 0.0) / 3),
        "vqa/question_type/colour": pytest.approx(0.8),
        "vqa/question_type/existence": 0.0,
        "vqa/answer_type/other": pytest.approx(0.8),
        "vqa/answer_type/y/n": 0.0,
        "vqa/n": 3.0,
    }


def test_answer_vocabulary_and_soft_targets():
    vocabulary = answer_vocabulary([["Two"] * 6 + ["yes"] * 4, ["the dog"] * 5 + ["yes"] * 5], top=3)
    assert vocabulary == ["yes", "2", "dog"]
    classes = {answer: index for index, answer in enumerate(vocabulary)}
    # "2" given by 2 of 10 disagreeing humans scores 0.6, "dog" (the humans' "dog" after punctuation) by 1: 0.3.
    assert soft_targets(["2", "2", "dog"] + ["cat"] * 7, classes) == {1: pytest.approx(0.6), 2: pytest.approx(0.3)}
