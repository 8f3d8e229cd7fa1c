"""MASK position embeddings: a masked slot also gets the specials row of its position (the authors' code).

kakaobrain/magvlt: `_apply_mask` (magvlt/models/maskgit/maskgit.py) counts every masked slot
as a special one, and the transformer (magvlt/models/stage2/transformers.py) adds the
special-token position embedding of its position in its modality on top of the modality's.
`mask_positions: modality` keeps the old embedding, which saved models without the option
were trained with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmgen.config import ConfigError, Spec, structure_spec
from mmgen.errors import UserError
from mmgen.layout import Part, pack
from mmgen.objectives.mask import MaskPrediction
from mmgen.plugins.models.argvlt import ArgvltModel
from mmgen.plugins.models.magvlt import MagvltModel
from mmgen.plugins.models.saved import DESCRIPTION_FILE, load_trained_model, save_trained_model
from mmgen.protocols import StepInput
from mmgen.registry import load_registry

from objective_helpers import (
    T2I,
    caption_segment,
    hand_batch,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_space,
)

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes" / "artefacts"
IMAGE_MASKED = (0, 5, 15)  # image positions shown as MASK_image
TEXT_MASKED = (2,)  # caption position shown as MASK_text


def build(model_class=MagvltModel, **options):
    torch.manual_seed(0)
    return model_class.from_config(model_class.Config(preset="tiny", **options), token_space=tiny_space())


def masked_packed():
    """[BOC][BEGIN_image] image [BOG][BEGIN_text] text, some slots of both shown as MASK."""
    image = image_segment([[i % 8 for i in range(16)]])
    text = caption_segment([[1, 2, 3, 4]])
    image_mask = torch.zeros(1, 16, dtype=torch.bool)
    image_mask[0, list(IMAGE_MASKED)] = True
    text_mask = torch.zeros(1, 6, dtype=torch.bool)
    text_mask[0, list(TEXT_MASKED)] = True
    items = ["BOC", Part(segment=image, mask=image_mask), "BOG", Part(segment=text, mask=text_mask)]
    return pack(tiny_space(), items)


def expected_embeddings(model, packed, *, special_rows: bool) -> torch.Tensor:
    """Each slot's token row plus its table's position row; a MASK also its specials row if `special_rows`."""
    space = model.token_space
    token, position = model.embedding.weight, model.positions.weight
    specials, image, text = model.table_starts.tolist()  # the specials table, then one per modality
    rows = [token[space.special("BOC")] + position[specials + 0]]
    rows.append(token[space.begin_id("image")] + position[specials + 1])
    for p in range(16):
        if p in IMAGE_MASKED:
            row = token[space.mask_id("image")] + position[image + p]
            rows.append(row + position[specials + p] if special_rows else row)
        else:
            rows.append(token[p % 8] + position[image + p])
    rows.append(token[space.special("BOG")] + position[specials + 2])
    rows.append(token[space.begin_id("text")] + position[specials + 3])
    for p, word in enumerate([1, 2, 3, 4, 0, 0]):  # the caption, end-of-text, padding
        if p in TEXT_MASKED:
            row = token[space.mask_id("text")] + position[text + p]
            rows.append(row + position[specials + p] if special_rows else row)
        else:
            rows.append(token[space.offset("text") + word] + position[text + p])
    return torch.stack(rows)[None]


@pytest.mark.parametrize("model_class", [MagvltModel, ArgvltModel])
def test_a_mask_adds_the_specials_row_of_its_position_by_default(model_class):
    model = build(model_class)
    packed = masked_packed()
    assert model.mask_positions == "special"
    with torch.no_grad():
        embedded = model.embed(packed.tokens, packed.table, packed.position)
    assert torch.equal(embedded, expected_embeddings(model, packed, special_rows=True))


@pytest.mark.parametrize("model_class", [MagvltModel, ArgvltModel])
def test_modality_gives_a_mask_its_modality_position_only(model_class):
    model = build(model_class, mask_positions="modality")
    packed = masked_packed()
    with torch.no_grad():
        embedded = model.embed(packed.tokens, packed.table, packed.position)
    assert torch.equal(embedded, expected_embeddings(model, packed, special_rows=False))


def test_only_masked_slots_differ_between_the_two_and_the_weights_are_the_same():
    special, modality = build(), build(mask_positions="modality")
    assert special.state_dict().keys() == modality.state_dict().keys()
    assert all(torch.equal(v, modality.state_dict()[k]) for k, v in special.state_dict().items())
    packed = masked_packed()
    with torch.no_grad():
        a = special.embed(packed.tokens, packed.table, packed.position)
        b = modality.embed(packed.tokens, packed.table, packed.position)
    differs = (a != b).any(dim=-1)[0]
    masked_slots = [2 + p for p in IMAGE_MASKED] + [2 + 16 + 2 + p for p in TEXT_MASKED]
    assert differs.nonzero().flatten().tolist() == masked_slots


def test_the_forward_pass_sees_the_specials_rows():
    special, modality = build().eval(), build(mask_positions="modality").eval()
    packed = masked_packed()
    seen = []
    special.blocks[0].register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    with torch.no_grad():
        special(packed)
        assert not torch.equal(special(packed), modality(packed))
    assert torch.equal(seen[0], expected_embeddings(special, packed, special_rows=True))


def test_a_specials_table_shorter_than_the_longest_modality_is_one_error_at_build():
    message = (
        "model: special_positions 15 is too small for mask_positions: special, where a MASK at position p of its"
        " modality also takes special position p ('image' has 16 positions): set special_positions >= 16, leave it"
        " unset (sum of modality lengths + 4, as the authors) or set mask_positions: modality"
    )
    with pytest.raises(UserError) as caught:
        build(special_positions=15)
    assert str(caught.value) == message
    assert build(special_positions=16).table_sizes.tolist() == [16, 16, 6]
    assert build(special_positions=4, mask_positions="modality").table_sizes.tolist() == [4, 16, 6]


def test_the_default_specials_table_has_a_row_for_every_modality_position():
    model = build()
    assert model.table_sizes.tolist() == [16 + 6 + 4, 16, 6]  # the authors' sum(lengths) + 4


def test_an_unknown_choice_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^model\.mask_positions: "):
        structure_spec(
            "models",
            {"use": "magvlt", "preset": "tiny", "mask_positions": "both"},
            path="model",
            registry=load_registry(),
        )
    with pytest.raises(UserError, match="mask_positions must be one of special, modality, got 'both'"):
        MagvltModel(token_space=tiny_space(), architecture=build().architecture, mask_positions="both")


@pytest.mark.parametrize("mask_positions", ["special", "modality"])
def test_a_training_step_works_and_trains_the_specials_rows_only_with_special(mask_positions):
    model = build(mask_positions=mask_positions).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = MaskPrediction(token_space=model.token_space)(
        model, StepInput(batch=hand_batch(), task=T2I, generator=torch.Generator().manual_seed(0))
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grad = model.positions.weight.grad
    # A T2I layout uses specials rows 0-3; image positions 4-15 can only be reached through a MASK.
    reached = grad[4:16].abs().sum(dim=-1) > 0
    assert bool(reached.any()) == (mask_positions == "special")
    assert grad[16:26].abs().sum() == 0  # no modality has 16 or more positions
    before = model.positions.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.positions.weight)


def save(directory: Path, model, spec: Spec) -> dict:
    save_trained_model(directory, state_dict=model.state_dict(), spec=spec, token_space=model.token_space)
    return json.loads((directory / DESCRIPTION_FILE).read_text(encoding="utf-8"))


@pytest.mark.parametrize("use", ["magvlt", "argvlt"])
def test_a_saved_model_names_its_choice_and_loads_with_it(tmp_path, use):
    registry = load_registry()
    model_class = registry.get("models", use)
    model = build(model_class)
    description = save(tmp_path, model, Spec(kind="models", use=use, config=model_class.Config(preset="tiny")))
    assert description["model"]["mask_positions"] == "special"
    assert load_trained_model(tmp_path, registry).mask_positions == "special"


@pytest.mark.parametrize("use", ["magvlt", "argvlt"])
def test_an_old_model_json_without_the_option_loads_as_modality(tmp_path, use):
    registry = load_registry()
    model_class = registry.get("models", use)
    model = build(model_class, mask_positions="modality")
    config = model_class.Config(preset="tiny", mask_positions="modality")
    description = save(tmp_path, model, Spec(kind="models", use=use, config=config))
    del description["model"]["mask_positions"]  # as written before the option existed
    (tmp_path / DESCRIPTION_FILE).write_text(json.dumps(description), encoding="utf-8")
    loaded = load_trained_model(tmp_path, registry)
    assert loaded.mask_positions == "modality"
    packed = masked_packed()
    with torch.no_grad():
        assert torch.equal(loaded(packed), model.eval()(packed))


def test_the_shipped_model_loads_as_it_was_trained():
    # Trained after issue 17 with the authors' MASK positions, and its model.json says so.
    (folder,) = SHIPPED.glob("captions-*")  # the shipped model (recipes/shapes.yaml's caption phase)
    assert json.loads((folder / DESCRIPTION_FILE).read_text(encoding="utf-8"))["model"]["mask_positions"] == "special"
    assert load_trained_model(folder, load_registry()).mask_positions == "special"
