"""Tasks with `full_length`: a text's end-of-text padding trains as tokens (VQA answers after a known question)."""

from __future__ import annotations

import torch

from mmgen.objectives.masked_forward import draw_task_masks
from mmgen.objectives.task_layout import batch_segments
from mmgen.objectives.tasks import TaskConfig, TaskDraw
from mmgen.task import Task

from objective_helpers import hand_batch, one_thread, tiny_space  # noqa: F401  (one_thread: fixture)

I2T_FULL = Task(name="vqa", context=("image",), target=("text",), full_length=True)
I2T = Task(name="i2t", context=("image",), target=("text",))


def test_full_length_counts_the_padding_of_every_text_as_tokens():
    batch = hand_batch()  # captions of lengths 2, 4 and 6 (EOS included) in 6 slots
    plain, full = batch_segments(I2T, batch), batch_segments(I2T_FULL, batch)
    assert plain["text"].lengths.tolist() == [2, 4, 6]
    assert full["text"].lengths.tolist() == [6, 6, 6]
    assert torch.equal(full["text"].tokens, plain["text"].tokens)  # the padding is end-of-text already
    assert torch.equal(full["image"].tokens, plain["image"].tokens) and full["image"].lengths.tolist() == [16] * 3


def test_masks_reach_the_padding_only_with_full_length():
    batch, space = hand_batch(), tiny_space()
    padding = ~batch_segments(I2T, batch)["text"].valid()
    on_padding = {False: 0, True: 0}
    for seed in range(20):
        for task in (I2T, I2T_FULL):
            segments = batch_segments(task, batch)
            masks = draw_task_masks(space, task, segments, generator=torch.Generator().manual_seed(seed))
            on_padding[task.full_length] += int((masks["text"] & padding).sum())
    assert on_padding[False] == 0 and on_padding[True] > 10


def test_the_task_draw_passes_full_length_on():
    draw = TaskDraw(
        {"vqa": TaskConfig(context=("image",), target=("text",), full_length=True)}, seed=0
    )
    assert draw(0) == I2T_FULL
