"""MAGVLT's `condition_attention: own` (issue 22): the exact mask, the cached condition and the sampler using it."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F
from mmgen.api import GuidanceOptions, Part, Segment, Spec, pack
from mmgen.config import structure_spec
from mmgen.objectives.mask import MaskPrediction
from mmgen.objectives.masked_forward import SHARED_KEY
from mmgen.plugins.models.argvlt import ArgvltModel
from mmgen.plugins.models.condition_cache import generation_slot
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.presets import Architecture
from mmgen.plugins.models.saved import load_trained_model, save_trained_model
from mmgen.protocols import GenerationRequest, RequestSegment, StepInput
from mmgen.registry import load_registry
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions
from objective_helpers import (
    I2T,
    T2I,
    caption_segment,
    hand_batch,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_space,
)

TOLERANCE = dict(rtol=0.0, atol=1e-5)  # the cached path runs the same ops on fewer slots: float rounding only


def own_model(*, depth: int = 2, seed: int = 0, attention: str = "own") -> MagvltModel:
    torch.manual_seed(seed)
    return MagvltModel(
        token_space=tiny_space(),
        architecture=Architecture(width=32, depth=depth, heads=2),
        condition_attention=attention,
    )


def i2t_packed(*, caption_mask: torch.Tensor | None = None) -> object:
    batch = hand_batch()
    return pack(
        tiny_space(),
        ["BOC", Part(segment=batch.modality("image")), "BOG", Part(segment=batch.modality("text"), mask=caption_mask)],
    )


def t2i_packed(*, image_mask: torch.Tensor | None = None, caption_mask: torch.Tensor | None = None) -> object:
    """Captions of 2, 4 and 6 tokens: rows 0 and 1 have padding in the context."""
    batch = hand_batch()
    items = [
        "BOC",
        Part(segment=batch.modality("text"), mask=caption_mask),
        "BOG",
        Part(segment=batch.modality("image"), mask=image_mask),
    ]
    return pack(tiny_space(), items)


# --- the mask -------------------------------------------------------------------------------------------


def test_own_mask_lets_the_context_see_only_the_context_and_never_padding():
    # One row, caption [5] + EOS in 6 slots (4 padding): [BOC] [BEGIN_t] t t pad pad pad pad [BOG] [BEGIN_i] i x 4.
    space = tiny_space(image_shape=(2, 2))
    caption = caption_segment([[5]])
    image = image_segment([[1, 2, 3, 4]])
    packed = pack(space, ["BOC", Part(segment=caption), "BOG", Part(segment=image)])
    assert generation_slot(packed, space) == 8
    torch.manual_seed(0)
    model = MagvltModel(
        token_space=space, architecture=Architecture(width=32, depth=1, heads=2), condition_attention="own"
    )
    mask = model.attention_mask(packed)[0]
    real = [0, 1, 2, 3]  # [BOC] [BEGIN_text] 5 EOS
    padding = [4, 5, 6, 7]
    target = list(range(8, 14))  # [BOG] [BEGIN_image] and the 4 image tokens
    expected = torch.zeros(14, 14, dtype=torch.bool)
    for query in real:
        expected[query, real] = True  # the context sees the context, nothing after [BOG]
    for query in padding:
        expected[query, real + [query]] = True  # as pack(): a padding row also sees itself (never read)
    for query in target:
        expected[query, real + target] = True  # [BOG] on sees everything but padding, as in "full"
    assert torch.equal(mask, expected)
    # "full" keeps the Packed's own mask: the context sees the target.
    full = MagvltModel(token_space=space, architecture=Architecture(width=32, depth=1, heads=2))
    assert torch.equal(full.attention_mask(packed)[0, 0], torch.tensor([True] * 4 + [False] * 4 + [True] * 6))


def test_own_mask_keeps_the_packs_length_query_limits():
    packed = pack(
        tiny_space(),
        [
            "BOC",
            Part(segment=hand_batch().modality("image")),
            "BOG",
            Part(segment=hand_batch().modality("text"), predict_length=True),
        ],
    )
    mask = own_model().attention_mask(packed)
    begin = packed.spans[-1].begin  # the text's BEGIN: sees only what precedes it and itself
    assert torch.equal(mask[:, begin], packed.attn_mask[:, begin])
    assert not mask[:, :18, 18:].any() and mask[:, :18, :18].all()  # 18 context slots: [BOC] [BEGIN] 16 codes


def test_the_generation_slot_of_every_layout():
    space = tiny_space()
    batch = hand_batch()
    image, text = batch.modality("image"), batch.modality("text")
    assert generation_slot(pack(space, ["BOC", Part(segment=text), "BOG", Part(segment=image)]), space) == 8
    assert generation_slot(pack(space, ["BOC", Part(segment=image)]), space) is None  # all context
    assert generation_slot(pack(space, ["BOG", Part(segment=image)]), space) == 0  # no context
    # Several context segments (T2IT's second target; in-context pairs): [BOG] after all of them.
    pairs = ["BOC", Part(segment=image), Part(segment=text), Part(segment=text), "BOG", Part(segment=image)]
    assert generation_slot(pack(space, pairs), space) == 1 + 17 + 7 + 7
    # MixSel writes a BOG_* marker, different per row, in [BOG]'s slot.
    packed = pack(space, ["BOC", Part(segment=image), "BOG", Part(segment=text)])
    tokens = packed.tokens.clone()
    tokens[:, 18] = torch.tensor([space.special(m) for m in ("BOG_LEFT", "BOG_TOP", "BOG_RIGHT")])
    assert generation_slot(attrs.evolve(packed, tokens=tokens), space) == 18


# --- "full" unchanged -----------------------------------------------------------------------------------


def reference_forward(model: MagvltModel, packed) -> torch.Tensor:
    """MagvltModel.forward and TransformerBlock as they were before the option (commit a60eeff)."""
    x = model.embed(packed.tokens, packed.table, packed.position, packed.segment)
    mask = None if packed.attn_mask is None else packed.attn_mask[:, None]
    for block in model.blocks:
        batch, length, width = x.shape
        h = block.attention_norm(x)
        q, k, v = block.qkv(h).view(batch, length, 3, block.heads, width // block.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)
        x = x + block.residual_dropout(block.attention_out(out.transpose(1, 2).reshape(batch, length, width)))
        x = x + block.residual_dropout(block.mlp_out(F.gelu(block.mlp_in(block.mlp_norm(x)))))
    return x


def test_full_is_the_default_and_computes_bit_identically_to_before():
    assert MagvltModel.Config(preset="tiny").condition_attention == "full"
    model = own_model(attention="full").eval()
    assert model.condition_attention == "full"
    with torch.no_grad():
        for packed in (
            t2i_packed(),
            i2t_packed(),
            pack(tiny_space(), ["BOC", Part(segment=hand_batch().modality("image"))]),
        ):
            assert torch.equal(model(packed), reference_forward(model, packed))
    # The option adds no parameter: the same seed gives the same weights.
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), own_model().state_dict().values()))


def test_a_saved_model_without_the_option_loads_as_full(tmp_path):
    registry = load_registry()
    model = MagvltModel.from_config(MagvltModel.Config(preset="tiny"), token_space=tiny_space())
    save_trained_model(
        tmp_path,
        state_dict=model.state_dict(),
        spec=Spec(kind="models", use="magvlt", config=MagvltModel.Config(preset="tiny")),
        token_space=tiny_space(),
    )
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["model"]["condition_attention"] == "full"
    del description["model"]["condition_attention"]  # as model.json files written before the option
    (tmp_path / "model.json").write_text(json.dumps(description))
    loaded = load_trained_model(tmp_path, registry)
    assert loaded.condition_attention == "full"
    packed = t2i_packed()
    with torch.no_grad():
        assert torch.equal(loaded(packed), reference_forward(model.eval(), packed))


SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints/shapes-first-phase/artefacts/train-fc4b1d51eefde40e"


@pytest.mark.skipif(not (SHIPPED / "model.json").is_file(), reason="no shipped Shapes model")
def test_the_shipped_model_loads_as_full_and_computes_as_before():
    assert "condition_attention" not in json.loads((SHIPPED / "model.json").read_text())["model"]
    model = load_trained_model(SHIPPED, load_registry())
    assert model.condition_attention == "full"
    space = model.token_space
    image = image_segment([[(5 * i + r) % 512 for i in range(64)] for r in range(2)])
    caption = Segment(modality="text", tokens=torch.tensor([[7, 9, 3, 1] + [1] * 20] * 2), lengths=torch.tensor([4, 2]))
    packed = pack(space, ["BOC", Part(segment=caption), "BOG", Part(segment=image, mask=masked_rows(2, 64, 3))])
    with torch.no_grad():
        assert torch.equal(model(packed), reference_forward(model, packed))


def test_save_and_load_keep_own(tmp_path):
    registry = load_registry()
    config = structure_spec(
        "models", {"use": "magvlt", "preset": "tiny", "condition_attention": "own"}, path="model", registry=registry
    ).config
    model = MagvltModel.from_config(config, token_space=tiny_space())
    assert model.condition_attention == "own"
    save_trained_model(
        tmp_path,
        state_dict=model.state_dict(),
        spec=Spec(kind="models", use="magvlt", config=config),
        token_space=tiny_space(),
    )
    loaded = load_trained_model(tmp_path, registry)
    assert loaded.condition_attention == "own"
    packed = t2i_packed()
    with torch.no_grad():
        assert torch.equal(loaded(packed), model.eval()(packed))
        assert not torch.allclose(loaded(packed), reference_forward(model, packed), atol=1e-4)  # "own" is not "full"


def test_unknown_values_and_argvlt_are_refused():
    with pytest.raises(ValueError, match="condition_attention must be one of full, own, got 'self'"):
        MagvltModel.Config(preset="tiny", condition_attention="self")
    with pytest.raises(ValueError, match="argvlt has no condition_attention 'own'"):
        ArgvltModel.Config(preset="tiny", condition_attention="own")
    with pytest.raises(ValueError, match="encode_condition needs condition_attention: own"):
        own_model(attention="full").encode_condition(t2i_packed())


# --- the cached condition -------------------------------------------------------------------------------


def masked_rows(rows: int, length: int, every: int) -> torch.Tensor:
    mask = torch.zeros(rows, length, dtype=torch.bool)
    mask[:, ::every] = True
    return mask


@pytest.mark.parametrize(
    "packed",
    [
        pytest.param(lambda: t2i_packed(image_mask=masked_rows(3, 16, 2)), id="t2i-padded-captions"),
        pytest.param(
            lambda: t2i_packed(image_mask=masked_rows(3, 16, 3), caption_mask=masked_rows(3, 6, 4)),
            id="t2i-masked-context",
        ),
        pytest.param(lambda: i2t_packed(caption_mask=masked_rows(3, 6, 2)), id="i2t"),
    ],
)
def test_cached_condition_equals_the_full_forward(packed):
    model = own_model().eval()
    packed = packed()
    with torch.no_grad():
        full = model(packed)
        condition = model.encode_condition(packed)
        target = model.forward_target(packed, condition)
        again = model.forward_target(packed, condition)  # the cache is reusable: each call writes its target anew
    start = generation_slot(packed, model.token_space)
    assert condition.length == start and target.shape == (3, packed.tokens.shape[1] - start, 32)
    torch.testing.assert_close(target, full[:, start:], **TOLERANCE)
    assert torch.equal(again, target)


def test_cached_condition_equals_the_full_forward_on_in_context_pairs():
    # [BOC] image0 text0 image1 text1 text2 [BOG] image2, with the segment-index embedding (in-context sequences).
    torch.manual_seed(5)
    model = MagvltModel(
        token_space=tiny_space(),
        architecture=Architecture(width=32, depth=2, heads=2),
        max_segments=6,
        condition_attention="own",
    ).eval()
    torch.nn.init.normal_(model.segments.weight, std=0.02)  # starts at zero: make the segment index matter
    batch = hand_batch()
    image, text = batch.modality("image"), batch.modality("text")
    shifted = attrs.evolve(image, tokens=(image.tokens + 1) % 8)
    items = ["BOC", Part(segment=image), Part(segment=text), Part(segment=shifted), Part(segment=text)]
    items += [Part(segment=text, mask=masked_rows(3, 6, 3)), "BOG", Part(segment=image, mask=masked_rows(3, 16, 2))]
    packed = pack(model.token_space, items)
    with torch.no_grad():
        full = model(packed)
        condition = model.encode_condition(packed)
        target = model.forward_target(packed, condition)
    assert condition.length == 1 + 2 * 17 + 3 * 7
    torch.testing.assert_close(target, full[:, condition.length :], **TOLERANCE)


def test_a_condition_from_the_context_alone_serves_any_target():
    model = own_model().eval()
    batch = hand_batch()
    prefix = pack(model.token_space, ["BOC", Part(segment=batch.modality("text"))])
    with torch.no_grad():
        condition = model.encode_condition(prefix)  # no room for a target yet: it grows once
        for every in (2, 5):
            packed = t2i_packed(image_mask=masked_rows(3, 16, every))
            torch.testing.assert_close(model.forward_target(packed, condition), model(packed)[:, 8:], **TOLERANCE)


def test_context_states_do_not_depend_on_the_target():
    model = own_model().eval()
    other = hand_batch().modality("image")
    with torch.no_grad():
        a = model(t2i_packed())
        changed = pack(
            model.token_space,
            [
                "BOC",
                Part(segment=hand_batch().modality("text")),
                "BOG",
                Part(segment=attrs.evolve(other, tokens=7 - other.tokens)),
            ],
        )
        b = model(changed)
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-4)


def test_a_mask_objective_step_trains_own_and_its_context_ignores_the_target():
    model = own_model()
    objective = MaskPrediction(token_space=model.token_space)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for task in (T2I, I2T):
        inputs = StepInput(batch=hand_batch(), task=task, generator=torch.Generator().manual_seed(0))
        out = objective(model, inputs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        assert torch.isfinite(out.loss)
        assert model.blocks[0].qkv.weight.grad.abs().sum() > 0
    # In the objective's own packed sequence, changing the target tokens leaves the context's states alone.
    inputs = StepInput(batch=hand_batch(), task=T2I, generator=torch.Generator().manual_seed(1))
    objective(model, inputs)
    forward = inputs.shared[SHARED_KEY]
    packed = forward.packed
    start = generation_slot(packed, model.token_space)
    tokens = packed.tokens.clone()
    image = packed.span("image")
    tokens[:, image.start : image.stop] = (tokens[:, image.start : image.stop] + 3) % 8
    model.eval()
    with torch.no_grad():
        before = model(packed)
        after = model(attrs.evolve(packed, tokens=tokens))
    assert torch.equal(before[:, :start], after[:, :start])
    assert not torch.allclose(before[:, start:], after[:, start:], atol=1e-4)


# --- the sampler ----------------------------------------------------------------------------------------


class CountingModel:
    """The model, counting full passes and target-only passes."""

    def __init__(self, model: MagvltModel, *, cache: bool) -> None:
        self.model = model
        self.token_space = model.token_space
        self.condition_attention = "own" if cache else "full"  # "full": the sampler takes the uncached path
        self.calls = {"forward": 0, "encode_condition": 0, "forward_target": 0}

    def __call__(self, packed):
        self.calls["forward"] += 1
        return self.model(packed)

    def encode_condition(self, packed):
        self.calls["encode_condition"] += 1
        return self.model.encode_condition(packed)

    def forward_target(self, packed, condition):
        self.calls["forward_target"] += 1
        return self.model.forward_target(packed, condition)

    def logits(self, hidden, modality):
        return self.model.logits(hidden, modality)

    def length_logits(self, hidden, modality=None):
        return self.model.length_logits(hidden, modality)


def request_t2i() -> GenerationRequest:
    caption = caption_segment([[5], [1, 2, 3], [9, 8, 7, 6, 4]])
    zeros = torch.zeros(3, 16, dtype=torch.long)
    return GenerationRequest(
        segments=[
            RequestSegment(
                modality="text",
                tokens=caption.tokens,
                known=torch.ones(3, 6, dtype=torch.bool),
                lengths=caption.lengths,
                target=False,
            ),
            RequestSegment(
                modality="image", tokens=zeros, known=torch.zeros(3, 16, dtype=torch.bool), lengths=None, target=True
            ),
        ]
    )


def request_i2t() -> GenerationRequest:
    image = hand_batch().modality("image").tokens
    known = torch.ones(3, 16, dtype=torch.bool)
    known[1, ::4] = False  # part of one image shown as MASK
    zeros = torch.zeros(3, 6, dtype=torch.long)
    return GenerationRequest(
        segments=[
            RequestSegment(modality="image", tokens=image, known=known, lengths=None, target=False),
            RequestSegment(
                modality="text", tokens=zeros, known=torch.zeros(3, 6, dtype=torch.bool), lengths=None, target=True
            ),
        ]
    )


GUIDANCE = {
    "off": GuidanceOptions(),
    "constant": GuidanceOptions(scale=2.0),
    "linear": GuidanceOptions(scale=2.0, schedule="linear"),
}


@pytest.mark.parametrize("one_batch_rows", [8, 0], ids=["one-batch", "two-passes"])
@pytest.mark.parametrize("guidance", list(GUIDANCE))
@pytest.mark.parametrize("task", ["t2i", "i2t"])
def test_the_sampler_caches_the_condition_and_draws_the_same_tokens(task, guidance, one_batch_rows, monkeypatch):
    # one_batch_rows 0: guidance's two passes run apart (as above ONE_GUIDED_BATCH_ROWS rows).
    import mmgen.samplers.maskgit as maskgit

    monkeypatch.setattr(maskgit, "ONE_GUIDED_BATCH_ROWS", one_batch_rows)
    model = own_model(seed=3).eval()
    options = GUIDANCE[guidance]
    sampler = MaskGitSampler(
        fixed=FixedLengthOptions(steps=5, guidance=options),
        variable=VariableLengthOptions(steps=4, top_k=None, temperature=1.0, guidance=options),
    )
    request = request_t2i() if task == "t2i" else request_i2t()
    runs = {}
    for cache in (False, True):
        counting = CountingModel(model, cache=cache)
        out = sampler.generate(counting, request, generator=torch.Generator().manual_seed(7))
        runs[cache] = (out.segments[0], counting.calls)
    (plain, plain_calls), (cached, cached_calls) = runs[False], runs[True]
    assert torch.equal(cached.tokens, plain.tokens) and torch.equal(cached.lengths, plain.lengths)
    steps = 5 if task == "t2i" else 4
    length_pass = 1 if task == "i2t" else 0  # the length prediction keeps its full pass
    apart = guidance != "off" and one_batch_rows == 0
    guided_steps = {"off": 0, "constant": steps, "linear": steps - 1}[guidance] if apart else 0
    assert plain_calls == {"forward": steps + guided_steps + length_pass, "encode_condition": 0, "forward_target": 0}
    # Encoded once per target; the unconditional rows once more with a linear schedule (step 0 unguided)
    # or when the passes run apart.
    encodes = 2 if guidance == "linear" or apart else 1
    passes = steps + guided_steps
    assert cached_calls == {"forward": length_pass, "encode_condition": encodes, "forward_target": passes}


def test_the_sampler_encodes_each_targets_condition_once():
    # T2IT: the caption is generated after the image, its condition holds the prompt and the new image.
    model = own_model(seed=4).eval()
    request = request_t2i()
    text = RequestSegment(
        modality="text",
        tokens=torch.zeros(3, 6, dtype=torch.long),
        known=torch.zeros(3, 6, dtype=torch.bool),
        lengths=None,
        target=True,
    )
    request = GenerationRequest(segments=[*request.segments, text])
    sampler = MaskGitSampler(
        fixed=FixedLengthOptions(steps=3), variable=VariableLengthOptions(steps=3, top_k=None, temperature=1.0)
    )
    outs = {}
    for cache in (False, True):
        counting = CountingModel(model, cache=cache)
        outs[cache] = sampler.generate(counting, request, generator=torch.Generator().manual_seed(1))
        if cache:
            assert counting.calls == {"forward": 1, "encode_condition": 2, "forward_target": 6}
    for plain, cached in zip(outs[False].segments, outs[True].segments):
        assert torch.equal(plain.tokens, cached.tokens)
