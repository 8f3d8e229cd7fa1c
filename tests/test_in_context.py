"""In-context generation: multi-pair layouts, the segment embedding, Shapes episodes, the in_context task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmgen.batch import Segment, TokenBatch
from mmgen.errors import UserError
from mmgen.layout import Part, pack
from mmgen.token_space import JointTokenSpace, TokenSpace

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "checkpoints" / "shapes" / "artefacts"
TRAIN = ROOT / "checkpoints" / "shapes-first-phase" / "artefacts" / "train-fc4b1d51eefde40e"
TOKENIZERS = SHAPES / "tokenizers-9caf423110ba03e5"

IMAGE = TokenSpace(name="image", vocab_size=16, shape=(2, 2))
TEXT = TokenSpace(name="text", vocab_size=10, shape=(3,), variable_length=True, pad_id=9, eos_id=9)
# ids: image 0-15, text 16-25, BOC 26, BOG 27, BEGIN_image 28, MASK_image 29, BEGIN_text 30, MASK_text 31


def two_pairs(image: str = "image", text: str = "text") -> list:
    img0 = Segment.full(image, torch.tensor([[0, 1, 2, 3]]))
    txt0 = Segment(modality=text, tokens=torch.tensor([[1, 9, 9]]), lengths=torch.tensor([2]))
    txt1 = Segment(modality=text, tokens=torch.tensor([[2, 3, 9]]), lengths=torch.tensor([3]))
    img1 = Segment.full(image, torch.tensor([[4, 5, 6, 7]]))
    mask = torch.tensor([[True, False, False, True]])
    return ["BOC", Part(segment=img0), Part(segment=txt0), Part(segment=txt1), "BOG", Part(segment=img1, mask=mask)]


def test_a_multi_pair_layout_has_exact_tokens_tables_positions_segments_and_spans():
    packed = pack(JointTokenSpace(spaces=(IMAGE, TEXT)), two_pairs())
    assert packed.tokens.tolist() == [[26, 28, 0, 1, 2, 3, 30, 17, 25, 25, 30, 18, 19, 25, 27, 28, 29, 5, 6, 29]]
    assert packed.table.tolist() == [0, 0, 1, 1, 1, 1, 0, 2, 2, 2, 0, 2, 2, 2, 0, 0, 1, 1, 1, 1]
    assert packed.position.tolist() == [0, 1, 0, 1, 2, 3, 2, 0, 1, 2, 3, 0, 1, 2, 4, 5, 0, 1, 2, 3]
    # [BOC] and a BEGIN belong to the part they precede; [BOG] to the target.
    assert packed.segment.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]
    assert [(s.modality, s.start, s.length, s.begin, s.part_index) for s in packed.spans] == [
        ("image", 2, 4, 1, 0),
        ("text", 7, 3, 6, 1),
        ("text", 11, 3, 10, 2),
        ("image", 16, 4, 15, 3),
    ]
    assert packed.span("text", 1).start == 11
    assert packed.key_padding[0].nonzero().flatten().tolist() == [9]  # txt1 holds 3 tokens, its last the EOS


def test_the_layout_knows_no_modality_names():
    renamed = JointTokenSpace(spaces=(attrs_evolve(IMAGE, "sound"), attrs_evolve(TEXT, "words")))
    a = pack(JointTokenSpace(spaces=(IMAGE, TEXT)), two_pairs())
    b = pack(renamed, two_pairs("sound", "words"))
    for field in ("tokens", "table", "position", "segment", "key_padding"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def attrs_evolve(space: TokenSpace, name: str) -> TokenSpace:
    import attrs

    return attrs.evolve(space, name=name)


def test_the_shipped_model_has_no_segment_table_and_a_grown_one_computes_exactly_the_same():
    from mmgen.plugins.models.saved import load_trained_model
    from mmgen.plugins.stages.new_parameters import with_segments
    from mmgen.plugins.models.saved import saved_spec
    from mmgen.registry import load_registry

    registry = load_registry()
    model = load_trained_model(TRAIN, registry)
    assert model.segments is None and not any(k.startswith("segments") for k in model.state_dict())
    spec, _ = saved_spec(TRAIN, registry)
    grown_spec, grown = with_segments(spec, model, 10, registry=registry)
    assert grown_spec.config.max_segments == 10 and grown.segments.weight.shape == (10, 128)
    assert not grown.segments.weight.any()
    space = model.token_space
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(0, 100, (2, 24), generator=generator)
    image = torch.randint(0, space.space("image").vocab_size, (2, 64), generator=generator)
    items = [
        "BOC",
        Part(segment=Segment(modality="text", tokens=text, lengths=torch.tensor([7, 24]))),
        "BOG",
        Part(segment=Segment.full("image", image), mask=torch.rand(2, 64, generator=generator) < 0.5),
    ]
    packed = pack(space, items)
    with torch.no_grad():
        assert torch.equal(model(packed), grown(packed))
    with pytest.raises(UserError, match="max_segments 4 is below the pretrained model's 10"):
        with_segments(grown_spec, grown, 4, registry=registry)


def test_load_with_segments_refuses_any_other_difference():
    from mmgen.plugins.models.magvlt import MagvltModel
    from mmgen.plugins.models.presets import architecture
    from mmgen.plugins.stages.new_parameters import load_with_segments

    space = JointTokenSpace(spaces=(IMAGE, TEXT))
    old = MagvltModel(token_space=space, architecture=architecture("tiny"))
    new = MagvltModel(token_space=space, architecture=architecture("tiny"), max_segments=3)
    load_with_segments(new, old.state_dict())
    assert torch.equal(new.embedding.weight, old.embedding.weight) and not new.segments.weight.any()
    state = {k: v for k, v in old.state_dict().items() if k != "head_norm.bias"}
    with pytest.raises(ValueError, match=r"missing \['head_norm.bias'\], unexpected \[\]"):
        load_with_segments(new, state)


def test_rules_draw_the_exact_scene():
    from mmgen.plugins.datasets.shapes.render import place
    from mmgen.plugins.datasets.shapes.scene import ObjectSpec, Scene
    from mmgen.plugins.datasets.shapes_episodes.rules import Rule, apply_rule, shows_rule

    spec = ObjectSpec(shape="circle", colour="red", size="large", cell="left")
    other = ObjectSpec(shape="square", colour="green", size="small", cell="top right")
    scene = Scene(size=64, objects=(place(spec, (11.0, 33.0), 64), place(other, (53.0, 10.0), 64)))
    colour = apply_rule(scene, Rule(kind="colour", source="red", target="blue"))
    assert [(o.spec.colour, o.spec.shape, o.spec.cell) for o in colour.objects] == [
        ("blue", "circle", "left"),
        ("green", "square", "top right"),
    ]
    shape = apply_rule(scene, Rule(kind="shape", source="square", target="cross"))
    assert [o.spec.shape for o in shape.objects] == ["circle", "cross"]
    down = apply_rule(scene, Rule(kind="shift", dx=0, dy=1))
    assert [(o.spec.cell, o.center) for o in down.objects] == [
        ("bottom left", (11.0, 33.0 + 64 / 3)),
        ("right", (53.0, 10.0 + 64 / 3)),
    ]
    assert apply_rule(scene, Rule(kind="identity")) == scene
    assert not shows_rule(scene, Rule(kind="shift", dx=1, dy=0))  # the top-right square cannot move right
    with pytest.raises(ValueError, match="moves the object in the top right off the canvas"):
        apply_rule(scene, Rule(kind="shift", dx=1, dy=0))
    with pytest.raises(ValueError, match="maps one colour to another"):
        Rule(kind="colour", source="red", target="red")


def test_episodes_caption_the_named_scene_draw_the_rule_and_vary():
    import io

    import numpy as np
    from PIL import Image

    from mmgen.plugins.datasets.shapes.captions import prompt
    from mmgen.plugins.datasets.shapes.image_oracle import read_image
    from mmgen.plugins.datasets.shapes.scene import Scene
    from mmgen.plugins.datasets.shapes_episodes.dataset import ShapesEpisodesDataset
    from mmgen.plugins.datasets.shapes_episodes.rules import Rule, apply_rule, shows_rule

    data = ShapesEpisodesDataset(counts={"train": 12}, pairs=3, max_objects=2, seed=3)
    records = list(data.records("train"))
    assert len(records) == 36 and records[4].key == "train-0000001-p1"
    kinds = set()
    for index, record in enumerate(records):
        meta = record.meta
        assert (meta["episode"], meta["pair"]) == divmod(index, 3)
        rule, named, drawn = Rule.from_json(meta["rule"]), Scene.from_json(meta), Scene.from_json(meta["drawn"])
        assert meta["rule"] == records[index - index % 3].meta["rule"]  # one rule per episode
        assert shows_rule(named, rule) and apply_rule(named, rule) == drawn
        assert record.captions == (prompt(named.specs),)
        pixels = np.asarray(Image.open(io.BytesIO(record.data)).convert("RGB"))
        assert sorted(map(str, read_image(pixels, size=64))) == sorted(map(str, drawn.specs))
        kinds.add(rule.kind)
    assert kinds == {"identity", "colour", "shape", "shift"}
    again = ShapesEpisodesDataset(counts={"train": 12}, pairs=3, max_objects=2, seed=3)
    assert [r.data for r in again.records("train")] == [r.data for r in records]
    other = ShapesEpisodesDataset(counts={"train": 12}, pairs=3, max_objects=2, seed=4)
    assert [r.data for r in other.records("train")] != [r.data for r in records]


def test_the_objective_maps_the_nth_mention_to_the_nth_segment_and_trains():
    from mmgen.api import StepInput, Task
    from mmgen.objectives.in_context import InContextMask, occurrence_segments
    from mmgen.plugins.models.magvlt import MagvltModel
    from mmgen.plugins.models.presets import architecture

    space = JointTokenSpace(spaces=(IMAGE, TEXT))
    pairs = []
    for j in range(3):
        pairs += [Segment.full("image", torch.full((2, 4), j)), Segment.full("text", torch.full((2, 3), j))]
    batch = TokenBatch(segments=pairs)
    task = Task(name="ic_t2i_k2", context=("image", "text", "image", "text", "text"), target=("image",))
    found = occurrence_segments((*task.context, *task.target), batch)
    assert [(s.modality, int(s.tokens[0, 0])) for s in found] == [
        ("image", 0),
        ("text", 0),
        ("image", 1),
        ("text", 1),
        ("text", 2),
        ("image", 2),
    ]
    model = MagvltModel(token_space=space, architecture=architecture("tiny"), max_segments=6)
    objective = InContextMask(token_space=space)
    out = objective(model, StepInput(batch=batch, task=task, generator=torch.Generator().manual_seed(0)))
    out.loss.backward()
    assert out.metrics["context_pairs"] == 5.0 and out.loss.item() > 0
    assert model.segments.weight.grad[:6].abs().sum() > 0


@pytest.fixture(scope="module")
def tokenizers():
    from mmgen.registry import load_registry
    from mmgen.stage import StageInputs

    inputs = StageInputs({"tokenizers": TOKENIZERS}, uses={"tokenizers": "tokenizers"}, registry=load_registry())
    return inputs.load("tokenizers")


def test_in_context_t2i_runs_end_to_end_and_keeps_the_context(tokenizers):
    from mmgen.api import GenerationPipeline, Prompt
    from mmgen.plugins.models.magvlt import MagvltModel
    from mmgen.plugins.models.presets import architecture
    from mmgen.plugins.tasks.in_context import InContext, encode_pairs
    from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions

    space = JointTokenSpace(spaces=[t.token_space for t in tokenizers.values()])
    model = MagvltModel(token_space=space, architecture=architecture("tiny"), max_segments=6).eval()
    seen = []

    class Recording(MaskGitSampler):
        def generate(self, model, request, **kwargs):
            seen.append(request)
            return super().generate(model, request, **kwargs)

    sampler = Recording(fixed=FixedLengthOptions(steps=2), variable=VariableLengthOptions(steps=2))
    pipeline = GenerationPipeline(model=model, tokenizers=tokenizers, sampler=sampler, show_progress=False)
    pictures = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    context = encode_pairs(
        tokenizers,
        [(pictures, ["a small red circle in the top", "a large blue square in the left"])],
        image="image",
        text="text",
    )
    task = InContext().with_context(context)
    prompts = [Prompt(key=f"q{i}", items={"text": "a small red circle in the center"}) for i in range(2)]
    generations = pipeline.run(task, prompts, seed=0, batch_size=2)
    assert [np.shape(g.outputs["image"]) for g in generations] == [(64, 64, 3)] * 2
    assert generations[0].inputs["context_pairs"] == 1
    (request,) = seen
    assert [(s.modality, s.target) for s in request.segments] == [
        ("image", False),
        ("text", False),
        ("text", False),
        ("image", True),
    ]
    assert torch.equal(request.segments[0].tokens, context[0]["image"].tokens)
    assert torch.equal(request.segments[1].tokens, context[0]["text"].tokens)
    for s in request.segments[:3]:  # every context token given, padding aside
        valid = (
            Segment(modality=s.modality, tokens=s.tokens, lengths=s.lengths).valid() if s.lengths is not None else True
        )
        assert bool((s.known.bool() | ~torch.as_tensor(valid)).all()) and bool(s.known.any())


def test_generate_command_context_errors_are_one_line(tmp_path):
    from mmgen.cli import main

    picture = tmp_path / "a.png"
    picture.write_bytes(b"not a png")
    base = ["generate", "--stage", f"train={TRAIN}", "--stage", f"tokenizers={TOKENIZERS}", "--tracker", "none"]
    runner = CliRunner()
    missing = runner.invoke(main, [*base, "--task", "in_context", "--context", str(tmp_path / "b.png"), "x"])
    assert missing.exit_code == 2
    assert f"Invalid value for '--context': File '{tmp_path / 'b.png'}' does not exist." in missing.output
    unpaired = runner.invoke(main, [*base, "--task", "in_context", "--prompt", "a", "--context", str(picture)])
    assert unpaired.exit_code == 2 and "Option '--context' requires 2 arguments." in unpaired.output
    wrong = runner.invoke(main, [*base, "--task", "t2i", "--prompt", "a", "--context", str(picture), "x"])
    assert wrong.exit_code == 2
    assert wrong.output.strip().splitlines()[-1] == (
        "error: mmgen generate: task 't2i' takes no --context pairs (in_context does)"
    )
    # `in-context` (the spelling of the issue) is the registered `in_context`.
    broken = runner.invoke(main, [*base, "--task", "in-context", "--prompt", "a", "--context", str(picture), "x"])
    assert broken.exit_code == 2 and f"--context {picture}: not a readable image" in broken.output


def test_the_recipe_reuses_the_shipped_models_and_trains_every_k(monkeypatch):
    from mmgen.recipe import load_recipe
    from mmgen.registry import load_registry

    monkeypatch.chdir(ROOT)  # its `reuse:` folders are relative to the repository
    recipe = load_recipe(ROOT / "recipes" / "in_context.yaml", registry=load_registry())
    assert [(r.key, r.use) for r in recipe.reused] == [("tokenizers", "tokenizers"), ("pretrained", "train")]
    stages = {entry.key: entry.spec for entry in recipe.stages}
    assert [key for key in stages] == ["data", "cache", "finetune", "evaluate_val", "evaluate"]
    assert (stages["evaluate_val"].config.split, stages["evaluate_val"].config.model_stage) == ("val", "finetune")
    finetune = stages["finetune"].config
    assert stages["finetune"].use == "in_context_finetune" and finetune.max_segments == 10
    assert sorted(finetune.tasks) == sorted(f"ic_{d}_k{k}" for d in ("t2i", "i2t") for k in range(5))
    assert finetune.tasks["ic_i2t_k2"].context == ("image", "text", "image", "text", "image")
    assert (stages["evaluate"].config.split, stages["evaluate"].config.model_stage) == ("test", "finetune")
