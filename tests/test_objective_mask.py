"""L_mask: mask ratios, mask positions, the masked sequence, the loss and a tiny model overfitting it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmgen.objectives.mask import MaskPrediction
from mmgen.objectives.masked_forward import SHARED_KEY, MaskedForward, masked_forward
from mmgen.objectives.masking import draw_positions, mask_count, mask_ratio
from mmgen.protocols import StepInput

from objective_helpers import (
    I2T,
    IT2IT,
    T2I,
    hand_batch,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)


def step_input(task, *, seed: int = 0, batch=None) -> StepInput:
    return StepInput(batch=batch or hand_batch(), task=task, generator=torch.Generator().manual_seed(seed))


def first_r(seed: int, rows: int = 3) -> torch.Tensor:
    """The per-sample r the objective draws first from a generator seeded with `seed`."""
    return torch.rand(rows, generator=torch.Generator().manual_seed(seed))


def test_image_ratio_is_cosine_and_text_ratio_is_linear():
    space = tiny_space()
    r = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(
        mask_ratio(space.space("image"), r), torch.tensor([1.0, math.cos(math.pi / 4), 0.0]), atol=1e-7
    )
    assert torch.equal(mask_ratio(space.space("text"), r), r)


def test_mask_count_is_ceil_clamped_to_one_and_n():
    ratio = torch.tensor([0.0, 0.3, 0.5, 1.0, 0.01, 0.5])
    available = torch.tensor([4, 4, 4, 4, 16, 0])
    assert mask_count(ratio, available).tolist() == [1, 2, 2, 4, 1, 0]


def test_positions_are_drawn_among_allowed_ones_only():
    allowed = torch.tensor([[True, True, False, False, False, False], [True] * 4 + [False] * 2, [True] * 6])
    ratio = torch.tensor([0.0, 0.5, 1.0])
    for seed in range(20):
        mask = draw_positions(allowed, ratio, generator=torch.Generator().manual_seed(seed))
        assert mask.sum(dim=1).tolist() == [1, 2, 6]
        assert not (mask & ~allowed).any()
    same = [draw_positions(allowed, ratio, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*same)


def test_t2i_masks_image_tokens_by_the_cosine_schedule_and_leaves_text_alone():
    space = tiny_space()
    model = tiny_model(space)
    inputs = step_input(T2I, seed=1)
    forward = masked_forward(model, inputs, space=space)
    r = first_r(1)
    expected = torch.ceil(torch.cos(math.pi / 2 * r) * 16).clamp(1, 16).long()
    assert set(forward.masks) == {"image"}
    assert forward.masks["image"].sum(dim=1).tolist() == expected.tolist()
    # [BOC] [BEGIN_text] text x6 [BOG] [BEGIN_image] image x16
    tokens = forward.packed.tokens
    assert tokens[:, 0].tolist() == [space.special("BOC")] * 3
    assert tokens[:, 1].tolist() == [space.begin_id("text")] * 3
    assert tokens[:, 8].tolist() == [space.special("BOG")] * 3
    assert tokens[:, 9].tolist() == [space.begin_id("image")] * 3
    batch = hand_batch()
    assert torch.equal(tokens[:, 2:8], batch.modality("text").tokens + space.offset("text"))
    image = batch.modality("image").tokens
    mask = forward.masks["image"]
    assert torch.equal(tokens[:, 10:], torch.where(mask, space.mask_id("image"), image))


def test_i2t_masks_text_linearly_and_never_its_padding():
    space = tiny_space()
    for seed in range(10):
        forward = masked_forward(tiny_model(space), step_input(I2T, seed=seed), space=space)
        lengths = torch.tensor([2, 4, 6])  # captions including their end-of-text
        expected = torch.ceil(first_r(seed) * lengths).clamp(min=1).long()
        expected = torch.minimum(expected, lengths)
        mask = forward.masks["text"]
        assert mask.sum(dim=1).tolist() == expected.tolist()
        assert not (mask & ~hand_batch().modality("text").valid()).any()
        assert set(forward.masks) == {"text"}


def test_it2it_masks_image_and_text_with_the_same_r():
    space = tiny_space()
    forward = masked_forward(tiny_model(space), step_input(IT2IT, seed=4), space=space)
    r = first_r(4)
    image_count = torch.ceil(torch.cos(math.pi / 2 * r) * 16).clamp(1, 16).long()
    text_count = torch.minimum(torch.ceil(r * torch.tensor([2, 4, 6])).clamp(min=1).long(), torch.tensor([2, 4, 6]))
    assert forward.masks["image"].sum(dim=1).tolist() == image_count.tolist()
    assert forward.masks["text"].sum(dim=1).tolist() == text_count.tolist()
    # The ratios move in opposite directions: cos(pi r / 2) falls as r rises.
    assert list(forward.masks) == ["image", "text"]


def test_the_forward_is_cached_for_the_other_objectives():
    space = tiny_space()
    model = tiny_model(space)
    inputs = step_input(T2I)
    first = masked_forward(model, inputs, space=space)
    assert isinstance(inputs.shared[SHARED_KEY], MaskedForward)
    assert masked_forward(model, inputs, space=space) is first
    assert first.hidden.shape == (3, 2 + 6 + 2 + 16, 32)


def test_loss_is_label_smoothed_cross_entropy_on_masked_positions_only():
    space = tiny_space()
    model = tiny_model(space)
    inputs = step_input(IT2IT, seed=2)
    out = MaskPrediction(token_space=space)(model, inputs)
    forward = inputs.shared[SHARED_KEY]
    total, terms, correct = 0, [], 0
    for modality, span_start in (("image", 2), ("text", 2 + 16 + 2)):
        mask = forward.masks[modality]
        length = mask.shape[1]
        logits = model.logits(forward.hidden[:, span_start : span_start + length][mask], modality)
        target = hand_batch().modality(modality).tokens[mask]
        terms.append(F.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        total += target.numel()
    assert torch.allclose(out.loss, sum(terms) / total)
    assert out.metrics == {"accuracy": correct / total, "masked_tokens": float(total)}


def test_config_defaults_follow_the_paper():
    config = MaskPrediction.Config()
    assert (config.weight, config.label_smoothing) == (1.0, 0.1)
    objective = MaskPrediction.from_config(config, token_space=tiny_space(), tokenizers=None)
    assert objective.weight == 1.0


# Where a short run lands depends on the CPU's float summation order. With a constant rate the
# loss still spikes now and then (0.17 at step 400 for seed 0 on an AVX-512 EPYC, 0.013 with
# ATen's AVX2 kernels), so the rate decays to zero over the last 200 of 600 updates. Measured on
# seeds 0-5 under five float paths (ATen AVX-512 / AVX2 / scalar kernels, MKL's default and
# compatible code paths): worst loss 0.010, every masked token right.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tiny_model_overfits_a_handful_of_pairs(seed):
    space = tiny_space()
    model = tiny_model(space, seed=seed)
    objective = MaskPrediction(token_space=space, label_smoothing=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    tasks = (T2I, I2T, IT2IT)
    for step in range(600):
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * min(1.0, (600 - step) / 200)
        out = objective(model, StepInput(batch=hand_batch(), task=tasks[step % 3], generator=generator))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for task in tasks:
            inputs = step_input(task, seed=123)
            out = objective(model, inputs)
            forward = inputs.shared[SHARED_KEY]
            assert out.loss.item() < 0.05, task.name
            for modality, logits in forward.logits.items():
                truth = hand_batch().modality(modality).tokens[forward.masks[modality]]
                assert torch.equal(logits.argmax(dim=-1), truth), (task.name, modality)


def test_an_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="no masked tokens"):
        from mmgen.objectives.masked_loss import masked_cross_entropy

        masked_cross_entropy(
            {"image": torch.zeros(0, 8)}, {"image": torch.zeros(0, dtype=torch.long)}, label_smoothing=0.1
        )
