"""Categorical draws by the Gumbel-max trick (samplers/draws.py): the distribution asked for, nothing outside it."""

from __future__ import annotations

import math

import pytest
import torch

from mmgen.samplers.autoregressive import TokenOptions, draw
from mmgen.samplers.draws import categorical, gumbel
from mmgen.samplers.maskgit import sample_tokens

ROWS = 200_000
# 6 standard deviations of a frequency p from ROWS draws is at most 6 * sqrt(0.25 / ROWS) = 0.0067.
TOLERANCE = 0.007


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens.flatten(), minlength=vocab).double() / tokens.numel()


def test_categorical_draws_in_proportion_to_the_probabilities() -> None:
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    logits = probs.log().expand(ROWS, -1)
    tokens = categorical(logits, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (ROWS,)
    got = frequencies(tokens, 5)
    assert got[4] == 0  # probability 0 (log -inf) is never drawn
    assert torch.allclose(got, probs.double(), atol=TOLERANCE), got


def test_categorical_ignores_a_constant_shift_of_the_logits() -> None:
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))
    first = categorical(logits, generator=torch.Generator().manual_seed(2))
    shifted = categorical(logits + 100.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, shifted)


def test_categorical_is_reproducible_from_the_generator_and_varies_with_it() -> None:
    logits = torch.zeros(4, 8, 16)
    a = categorical(logits, generator=torch.Generator().manual_seed(3))
    b = categorical(logits, generator=torch.Generator().manual_seed(3))
    c = categorical(logits, generator=torch.Generator().manual_seed(4))
    assert a.shape == (4, 8) and torch.equal(a, b) and not torch.equal(a, c)


def test_gumbel_noise_has_the_standard_mean_and_variance() -> None:
    noise = gumbel(torch.Size([ROWS]), generator=torch.Generator().manual_seed(5), device=torch.device("cpu"))
    # Standard Gumbel: mean = Euler's gamma, variance = pi^2 / 6.
    assert abs(noise.mean().item() - 0.5772) < 0.01
    assert abs(noise.var().item() - math.pi**2 / 6) < 0.03


def test_maskgit_sample_tokens_keeps_top_k_and_returns_the_tempered_log_probability() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).log_softmax(0).expand(ROWS, 1, -1)
    tokens, log_p = sample_tokens(logits, temperature=0.5, top_k=2, generator=torch.Generator().manual_seed(6))
    assert tokens.shape == (ROWS, 1)
    tempered = (torch.tensor([2.0, 1.0]) / 0.5).softmax(0).double()  # top 2 at temperature 0.5
    got = frequencies(tokens, 4)
    assert got[2] == 0 and got[3] == 0
    assert torch.allclose(got[:2], tempered, atol=TOLERANCE), got
    assert torch.allclose(log_p[tokens == 0].unique(), tempered[:1].log().float())
    assert torch.allclose(log_p[tokens == 1].unique(), tempered[1:].log().float())


@pytest.mark.parametrize("top_p, expected", [(0.5, [1.0, 0.0, 0.0]), (0.6, [0.625, 0.375, 0.0])])
def test_autoregressive_draw_keeps_the_nucleus(top_p: float, expected: list[float]) -> None:
    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(ROWS, -1)
    tokens = draw(logits, TokenOptions(top_k=None, top_p=top_p), generator=torch.Generator().manual_seed(7))
    got = frequencies(tokens, 3)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.double), atol=TOLERANCE), got
