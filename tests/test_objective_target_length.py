"""L_TL: the caption length from the BEGIN state of the variable-length target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmgen.batch import TokenBatch
from mmgen.objectives.masked_forward import masked_forward
from mmgen.objectives.target_length import TargetLength, length_view
from mmgen.protocols import StepInput

from objective_helpers import (
    I2T,
    IT2IT,
    T2I,
    caption_segment,
    hand_batch,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)


def step_input(task, batch=None) -> StepInput:
    return StepInput(batch=batch or hand_batch(), task=task, generator=torch.Generator().manual_seed(0))


def test_the_length_view_masks_the_whole_target_and_hides_its_padding():
    space = tiny_space()
    batch = hand_batch()
    packed = length_view(space, I2T, {"image": batch.modality("image"), "text": batch.modality("text")})
    # [BOC] [BEGIN_image] image x16 [BOG] [BEGIN_text] text x6
    assert torch.equal(packed.tokens[:, 2:18], batch.modality("image").tokens)
    assert (packed.tokens[:, 20:] == space.mask_id("text")).all()
    assert not packed.key_padding.any()
    begin = packed.span("text").begin
    assert begin == 19
    assert packed.attn_mask[:, begin, : begin + 1].all() and not packed.attn_mask[:, begin, begin + 1 :].any()
    assert packed.attn_mask[:, :begin].all()  # everything else attends everywhere


def test_loss_is_cross_entropy_of_length_minus_one():
    space = tiny_space()
    model = tiny_model(space)
    out = TargetLength(token_space=space)(model, step_input(I2T))
    batch = hand_batch()
    packed = length_view(space, I2T, {"image": batch.modality("image"), "text": batch.modality("text")})
    logits = model.length_logits(model(packed)[:, 19], "text")
    classes = torch.tensor([1, 3, 5])  # captions of length 2, 4 and 6 (with end-of-text)
    assert torch.allclose(out.loss, F.cross_entropy(logits, classes))
    predicted = logits.argmax(-1)
    assert out.metrics == {
        "accuracy": int((predicted == classes).sum()) / 3,
        "abs_error": int((predicted - classes).abs().sum()) / 3,
    }


def test_length_logits_ignore_the_target_tokens_and_lengths():
    space = tiny_space()
    model = tiny_model(space, depth=3).eval()
    images = image_segment([[3] * 16, [5] * 16])
    one = TokenBatch(segments=(images, caption_segment([[1, 2], [4]])))
    other = TokenBatch(segments=(images, caption_segment([[9, 9, 9, 9, 9], [7, 7, 7]])))

    def logits(batch: TokenBatch) -> torch.Tensor:
        packed = length_view(space, I2T, {"image": batch.modality("image"), "text": batch.modality("text")})
        return model.length_logits(model(packed)[:, packed.span("text").begin])

    assert torch.allclose(logits(one), logits(other), atol=1e-6)
    # ...while the context does change them.
    changed = TokenBatch(segments=(image_segment([[0] * 16, [1] * 16]), one.modality("text")))
    assert not torch.allclose(logits(one), logits(changed), atol=1e-6)


def test_it2it_reads_the_length_from_the_unmasked_context():
    space = tiny_space()
    model = tiny_model(space)
    i2t = TargetLength(token_space=space)(model, step_input(I2T))
    it2it = TargetLength(token_space=space)(model, step_input(IT2IT))
    assert torch.equal(i2t.loss, it2it.loss)


def test_a_batch_without_a_variable_length_target_gives_zero_that_reaches_the_head():
    space = tiny_space()
    model = tiny_model(space)
    inputs = step_input(T2I)
    objective = TargetLength(token_space=space)
    assert objective.variable_targets(T2I) == ()
    assert objective(model, step_input(T2I)).loss.item() == 0.0  # nothing cached: a plain zero
    masked_forward(model, inputs, space=space)
    out = objective(model, inputs)
    assert out.loss.item() == 0.0 and out.metrics == {}
    out.loss.backward()
    head = model.length_heads["text"].weight
    assert head.grad is not None and not head.grad.any()
    assert model.blocks[0].qkv.weight.grad is None  # the zero does not reach the trunk


# Measured on seeds 0-4 under five float paths (ATen AVX-512 / AVX2 / scalar kernels, MKL's
# default and compatible code paths): all three lengths right from update 64 at the latest, and
# the true class leads the next by at least 7.2 logits after 100.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_k_is_length_k_plus_one_and_trains(seed):
    space = tiny_space()
    model = tiny_model(space, seed=seed)
    objective = TargetLength(token_space=space, weight=0.01)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        out = objective(model, step_input(I2T))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert out.metrics["accuracy"] == 1.0
    batch = hand_batch()
    packed = length_view(space, I2T, {"image": batch.modality("image"), "text": batch.modality("text")})
    lengths = model.length_logits(model.eval()(packed)[:, 19]).argmax(-1) + 1
    assert lengths.tolist() == batch.modality("text").lengths.tolist() == [2, 4, 6]
    assert TargetLength.Config().weight == 0.01


def test_fraction_predicts_the_first_rows_only():
    space = tiny_space()
    model = tiny_model(space)
    out = TargetLength(token_space=space, fraction=0.5)(model, step_input(I2T))
    two = hand_batch().select(slice(0, 2))
    packed = length_view(space, I2T, {"image": two.modality("image"), "text": two.modality("text")})
    logits = model.length_logits(model(packed)[:, 19], "text")
    assert torch.allclose(out.loss, F.cross_entropy(logits, torch.tensor([1, 3])))
