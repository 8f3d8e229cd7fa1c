"""The autoregressive sampler: exact token filtering, end-of-text, known prefixes, refusals, and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from generation_helpers import one_thread, spaces  # noqa: F401 (one_thread: an autouse fixture)
from mmgen.api import ConfigError, GenerationRequest, Packed, RequestSegment, load_registry, structure_spec
from mmgen.plugins.models.argvlt import ArgvltModel
from mmgen.plugins.models.presets import Architecture
from mmgen.samplers.autoregressive import (
    AutoregressiveSampler,
    LeftToRightError,
    TokenOptions,
    draw,
    filter_logits,
)

NEG = -math.inf
SPACE = spaces()  # image: 2x2 of 8 codes; text: up to 6 of 10, 0 = end-of-text = pad
# Slot of the target's BEGIN in T2I and I2T: [BOC][BEGIN_text] 6 text [BOG][BEGIN_image]; [BOC][BEGIN_image] 4 [BOG].
BEGIN = {"image": 9, "text": 7}


class FakeCausal:
    """Logits fixed per (row, target position): `logits[m]` [B, L, V] is what the target's BEGIN + i predicts.

    Hidden state of a slot: (its index after the target's BEGIN, the slot after BOG; its row). Records every call.
    """

    def __init__(self, logits: dict[str, torch.Tensor]) -> None:
        self.token_space = SPACE
        self.table = logits
        self.calls: list[Packed] = []
        self.modalities: list[str] = []

    def __call__(self, packed: Packed) -> torch.Tensor:
        self.calls.append(packed)
        begin = int((packed.tokens[0] == SPACE.special("BOG")).nonzero()[0, 0]) + 1
        return self._hidden(torch.arange(packed.tokens.shape[1]) - begin, packed.tokens.shape[0])

    def _hidden(self, slots: torch.Tensor, batch: int) -> torch.Tensor:
        rows = torch.arange(batch)[:, None].expand(batch, len(slots))
        return torch.stack([slots[None].expand(batch, -1), rows], dim=-1).float()

    def logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        self.modalities.append(modality)
        slot, row = hidden[..., 0].long(), hidden[..., 1].long()
        return self.table[modality][row, slot]


class FakeCachedCausal(FakeCausal):
    """The same logits through prefill / extend; records the slots each runs."""

    def __init__(self, logits: dict[str, torch.Tensor]) -> None:
        super().__init__(logits)
        self.prefilled: list[int] = []
        self.extended: list[torch.Tensor] = []

    def prefill(self, packed: Packed, *, capacity: int | None = None):
        self.prefilled.append(packed.tokens.shape[1])
        hidden = self(packed)
        return hidden, {"next": int(hidden[0, -1, 0]) + 1}

    def extend(self, tokens, table, position, cache):
        self.extended.append(tokens)
        slots = torch.arange(cache["next"], cache["next"] + tokens.shape[1])
        cache["next"] += tokens.shape[1]
        return self._hidden(slots, tokens.shape[0])


def peaked(rows: list[list[int]], vocab: int) -> torch.Tensor:
    """[B, L, V] logits that pick `rows[b][i]` at position i."""
    table = torch.full((len(rows), len(rows[0]), vocab), -50.0)
    for b, row in enumerate(rows):
        table[b, torch.arange(len(row)), torch.tensor(row)] = 50.0
    return table


def segment(modality, tokens, *, known=None, lengths=None, target=False) -> RequestSegment:
    tokens = torch.as_tensor(tokens)
    known = torch.ones_like(tokens, dtype=torch.bool) if known is None else torch.as_tensor(known, dtype=torch.bool)
    return RequestSegment(
        modality=modality, tokens=tokens, known=known, lengths=None if lengths is None else torch.as_tensor(lengths)
    )


def target(modality, batch, length, *, tokens=None, known=None) -> RequestSegment:
    tokens = torch.zeros(batch, length, dtype=torch.long) if tokens is None else torch.as_tensor(tokens)
    known = torch.zeros(batch, length, dtype=torch.bool) if known is None else torch.as_tensor(known, dtype=torch.bool)
    return RequestSegment(modality=modality, tokens=tokens, known=known, target=True)


def image_prompt(batch=2) -> RequestSegment:
    return segment("image", torch.arange(4).repeat(batch, 1))


def caption_prompt(batch=2) -> RequestSegment:
    return segment("text", [[3, 4, 0, 0, 0, 0]] * batch, lengths=[3] * batch)


def i2t(batch=2) -> GenerationRequest:
    return GenerationRequest(segments=[image_prompt(batch), target("text", batch, 6)])


def run(sampler, model, request, seed=0):
    return sampler.generate(model, request, generator=torch.Generator().manual_seed(seed)).segments


# ---- token filtering: exact ------------------------------------------------------------------


def test_temperature_divides_the_logits():
    logits = torch.tensor([1.0, 2.0, 4.0])
    assert filter_logits(logits, TokenOptions(temperature=2.0, top_k=None)).tolist() == [0.5, 1.0, 2.0]


def test_top_k_keeps_the_k_largest_and_ties_at_the_kth():
    logits = torch.tensor([[1.0, 3.0, 0.0, 2.0], [1.0, 3.0, 3.0, 2.0]])
    kept = filter_logits(logits, TokenOptions(top_k=2))
    assert kept.tolist() == [[NEG, 3.0, NEG, 2.0], [NEG, 3.0, 3.0, NEG]]


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.4, [False, True, False, False]), (0.7, [False, True, False, True]), (0.85, [True, True, False, True])],
)
def test_top_p_keeps_the_smallest_set_that_reaches_p(top_p, kept):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # in order of probability: 1, 3, 0, 2
    filtered = filter_logits(probs.log(), TokenOptions(top_k=None, top_p=top_p))
    assert (filtered > NEG).tolist() == kept
    assert torch.allclose(filtered[filtered > NEG], probs.log()[torch.tensor(kept)])


def test_top_k_applies_before_top_p():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    # After top-2 the renormalised masses are 4/7 and 3/7: p = 0.5 keeps only the first.
    filtered = filter_logits(probs.log(), TokenOptions(top_k=2, top_p=0.5))
    assert (filtered > NEG).tolist() == [True, False, False, False]


def test_draws_stay_inside_the_filtered_set_and_cover_it():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0, -1.0]]).expand(400, -1)
    tokens = draw(logits, TokenOptions(top_k=2), generator=torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {1, 2}


def test_options_are_checked_at_their_path():
    registry = load_registry()
    with pytest.raises(ConfigError, match=r"sampler\.variable\.top_p: must be in \(0, 1\] or null, got 0.0"):
        structure_spec(
            "samplers", {"use": "autoregressive", "variable": {"top_p": 0.0}}, path="sampler", registry=registry
        )
    with pytest.raises(ConfigError, match=r"sampler\.fixed\.temperature: must be > 0"):
        structure_spec(
            "samplers", {"use": "autoregressive", "fixed": {"temperature": 0}}, path="sampler", registry=registry
        )


# ---- sequences: end-of-text, lengths, known prefixes -----------------------------------------


def test_each_row_stops_at_its_end_of_text_and_is_padded_after_it():
    model = FakeCausal({"text": peaked([[3, 4, 0, 5, 6, 7], [5, 6, 7, 8, 9, 9]], 10)})
    (text,) = run(AutoregressiveSampler(), model, i2t())
    # Row 1 never draws end-of-text: its last slot gets it, as the tokenizer ends every caption.
    assert text.tokens.tolist() == [[3, 4, 0, 0, 0, 0], [5, 6, 7, 8, 9, 0]]
    assert text.lengths.tolist() == [3, 6]
    assert set(model.modalities) == {"text"}


def test_sampling_stops_when_every_row_has_ended():
    model = FakeCausal({"text": peaked([[3, 0, 1, 1, 1, 1], [5, 6, 0, 1, 1, 1]], 10)})
    (text,) = run(AutoregressiveSampler(), model, i2t())
    assert text.tokens.tolist() == [[3, 0, 0, 0, 0, 0], [5, 6, 0, 0, 0, 0]]
    assert text.lengths.tolist() == [2, 3]
    assert len(model.calls) == 3  # tokens 0, 1, 2: the model is not run after the last row ended


def test_an_image_target_samples_exactly_its_token_count_and_ignores_code_zero():
    model = FakeCausal({"image": peaked([[0, 0, 5, 7]], 8)})
    request = GenerationRequest(segments=[caption_prompt(1), target("image", 1, 4)])
    (image,) = run(AutoregressiveSampler(), model, request)
    assert image.tokens.tolist() == [[0, 0, 5, 7]] and image.lengths.tolist() == [4]
    assert len(model.calls) == 4 and set(model.modalities) == {"image"}


def test_known_prefixes_are_kept_and_fed_and_the_rest_sampled():
    # Row 0 gives two words, row 1 one: both rows step from token 1; row 0's draw at token 1 is replaced by its 4.
    model = FakeCausal({"text": peaked([[9, 9, 5, 0, 1, 1], [9, 7, 8, 0, 1, 1]], 10)})
    tokens = [[3, 4, 0, 0, 0, 0], [6, 0, 0, 0, 0, 0]]
    known = [[True, True, False, False, False, False], [True, False, False, False, False, False]]
    request = GenerationRequest(segments=[image_prompt(), target("text", 2, 6, tokens=tokens, known=known)])
    (text,) = run(AutoregressiveSampler(), model, request)
    assert text.tokens.tolist() == [[3, 4, 5, 0, 0, 0], [6, 7, 8, 0, 0, 0]]
    assert text.lengths.tolist() == [4, 4]
    first = model.calls[0]
    assert first.tokens.shape[1] == BEGIN["text"] + 2  # everything up to token 0 of the text, once
    assert model.calls[-1].tokens[:, BEGIN["text"] + 1 : BEGIN["text"] + 3].tolist() == [
        [3 + 8, 4 + 8],
        [6 + 8, 7 + 8],
    ]  # joint ids: text after the 8 image codes


def test_a_given_length_caps_a_caption():
    model = FakeCausal({"text": peaked([[3, 4, 5, 6, 7, 8]], 10)})
    request = GenerationRequest(
        segments=[
            image_prompt(1),
            RequestSegment(
                modality="text",
                tokens=torch.zeros(1, 6, dtype=torch.long),
                known=torch.zeros(1, 6, dtype=torch.bool),
                lengths=torch.tensor([3]),
                target=True,
            ),
        ]
    )
    (text,) = run(AutoregressiveSampler(), model, request)
    assert text.tokens.tolist() == [[3, 4, 0, 0, 0, 0]] and text.lengths.tolist() == [3]


def test_a_second_target_is_conditioned_on_the_first():
    model = FakeCausal({"image": peaked([[1, 2, 3, 4]], 8), "text": torch.zeros(1, 6, 10)})
    model.table["text"] = peaked([[5, 0, 0, 0, 0, 0]], 10)
    request = GenerationRequest(segments=[caption_prompt(1), target("image", 1, 4), target("text", 1, 6)])
    image, text = run(AutoregressiveSampler(), model, request)
    assert image.tokens.tolist() == [[1, 2, 3, 4]] and text.tokens.tolist()[0][:2] == [5, 0]
    last = model.calls[-1]  # [BOC][BEGIN_text] prompt [BEGIN_image] image [BOG][BEGIN_text] text
    assert [s.modality for s in last.spans] == ["text", "image"]
    assert last.tokens[0, 9:13].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("task", ["inpaint", "t2t"])
def test_a_target_with_known_tokens_after_unknown_ones_is_refused_before_sampling(task):
    model = FakeCausal({"image": peaked([[1, 2, 3, 4]], 8), "text": peaked([[1, 2, 3, 4, 5, 0]], 10)})
    if task == "inpaint":
        request = GenerationRequest(
            segments=[caption_prompt(1), target("image", 1, 4, known=[[True, False, True, True]])]
        )
    else:
        request = GenerationRequest(
            segments=[
                image_prompt(1),
                RequestSegment(
                    modality="text",
                    tokens=torch.tensor([[1, 2, 3, 4, 5, 0]]),
                    known=torch.tensor([[True, False, False, True, True, True]]),
                    lengths=torch.tensor([6]),
                    target=True,
                ),
            ]
        )
    modality = "image" if task == "inpaint" else "text"
    with pytest.raises(LeftToRightError) as error:
        run(AutoregressiveSampler(), model, request)
    assert str(error.value) == (
        f"the autoregressive sampler generates left to right, but the {modality!r} target has known tokens after"
        " ones to generate (inpainting, infilling): use a MAGVLT model with the maskgit sampler"
    )
    assert model.calls == []


# ---- the KV cache ---------------------------------------------------------------------------


def test_the_cache_runs_the_prefix_once_then_one_slot_per_token():
    logits = {"text": peaked([[3, 4, 5, 0, 1, 1], [5, 6, 7, 8, 0, 1]], 10)}
    uncached, cached = FakeCausal(logits), FakeCachedCausal(logits)
    (a,) = run(AutoregressiveSampler(cache=False), uncached, i2t())
    (b,) = run(AutoregressiveSampler(), cached, i2t())
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    assert cached.prefilled == [BEGIN["text"] + 1] and len(cached.calls) == 1
    # Tokens 0..3 are fed back (token 4 ends the last row); joint ids are text ids + 8.
    assert [t.squeeze(1).tolist() for t in cached.extended] == [[11, 13], [12, 14], [13, 15], [8, 16]]
    assert [c.tokens.shape[1] for c in uncached.calls] == [8, 9, 10, 11, 12]


def tiny_argvlt(seed=0) -> ArgvltModel:
    torch.manual_seed(seed)
    return ArgvltModel(token_space=SPACE, architecture=Architecture(width=32, depth=2, heads=2)).eval()


@pytest.mark.parametrize("kind", ["t2i", "i2t", "t2it"])
def test_cached_and_uncached_sampling_give_the_same_tokens_under_a_fixed_seed(kind):
    batch = 3
    segments = {
        "t2i": [caption_prompt(batch), target("image", batch, 4)],
        "i2t": [image_prompt(batch), target("text", batch, 6)],
        "t2it": [caption_prompt(batch), target("image", batch, 4), target("text", batch, 6)],
    }[kind]
    request = GenerationRequest(segments=segments)
    options = TokenOptions(top_k=None)  # the full distribution: any difference in logits could show
    model = tiny_argvlt()
    results = {}
    for cache in (True, False):
        sampler = AutoregressiveSampler(fixed=options, variable=options, cache=cache)
        results[cache] = run(sampler, model, request, seed=7)
    for cached, uncached in zip(results[True], results[False]):
        assert torch.equal(cached.tokens, uncached.tokens)
        assert torch.equal(cached.lengths, uncached.lengths)
    other = run(AutoregressiveSampler(fixed=options, variable=options), model, request, seed=8)
    assert any(not torch.equal(a.tokens, b.tokens) for a, b in zip(other, results[True]))
