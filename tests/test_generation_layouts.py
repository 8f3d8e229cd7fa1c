"""Generation uses only the layouts training produces, and a saved model records which those were.

Every built-in task's model calls are read back from the packed sequences a
fake model receives: the special tokens, the segments and their MASK state,
the position tables and slots. A model that records its trained layouts gets
only those; one without the record (the shipped checkpoints) runs as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from generation_helpers import uniform_over
from mmgen.api import (
    SPECIALS_TABLE,
    GenerationPipeline,
    Prompt,
    Task,
    TrainedLayouts,
    UserError,
    box_mask,
    structure_attrs,
)
from mmgen.generation.layouts import GIVEN, MASKED, PARTIAL, Layout, planned_layouts
from mmgen.guidance import GuidanceOptions
from mmgen.plugins.stages.train_model import TrainModelStage, read_trained_layouts, train_and_save
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler
from test_generation_tasks import FAST, SpySampler, build, fake_model, prompts, registry, stripes, tokenizers

ROOT = Path(__file__).resolve().parents[1]
T2I = Task(name="t2i", context=("text",), target=("image",))
I2T = Task(name="i2t", context=("image",), target=("text",))
IT2IT = Task(name="it2it", context=("image",), target=("text",), mask_context=True)
PAPER = TrainedLayouts(tasks=[T2I, I2T, IT2IT])  # MAGVLT's three tasks, no condition dropout
TWINS = TrainedLayouts(tasks=[T2I, I2T])  # what an ARGVLT recipe trains
DROPOUT = TrainedLayouts(tasks=[T2I, I2T, IT2IT], condition_dropout=0.1)

# The two training layouts, as `sequence` writes a packed row.
T2I_SEQ = ["BOC", "BEGIN_text", "text", "BOG", "BEGIN_image", "image"]
I2T_SEQ = ["BOC", "BEGIN_image", "image", "BOG", "BEGIN_text", "text"]
DROPPED_CAPTION_SEQ = ["BOC", "BEGIN_text", "MASK(text)", "BOG", "BEGIN_image", "image"]
DROPPED_IMAGE_SEQ = ["BOC", "BEGIN_image", "MASK(image)", "BOG", "BEGIN_text", "text"]
IT2IT_SEQ = ["BOC", "BEGIN_image", "image(partly MASK)", "BOG", "BEGIN_text", "text"]


def sequence(space, packed, row: int = 0) -> list[str]:
    """Row `row` of a packed batch: special token names, and each segment before BOG with its MASK state."""
    names = {space.special(name): name for name in space.special_names}
    bog = int((packed.tokens[row] == space.special("BOG")).nonzero()[0, 0])
    items = []
    for position in (packed.table == SPECIALS_TABLE).nonzero().flatten().tolist():
        items.append((position, names[int(packed.tokens[row, position])]))
    for span in packed.spans:
        if span.start > bog:  # a target: its MASK state changes with every refinement step
            items.append((span.start, span.modality))
            continue
        valid = ~packed.key_padding[row, span.start : span.stop]
        masked = (packed.tokens[row, span.start : span.stop] == space.mask_id(span.modality)) & valid
        state = "MASK({})" if bool(masked[valid].all()) else "{}(partly MASK)" if bool(masked.any()) else "{}"
        items.append((span.start, state.format(span.modality)))
    return [name for _, name in sorted(items)]


def passes(model) -> list[list[str]]:
    """The layouts of a fake model's calls, a run of equal ones counted once."""
    found: list[list[str]] = []
    for packed in model.calls:
        seq = sequence(model.token_space, packed)
        if not found or found[-1] != seq:
            found.append(seq)
    return found


def pipeline_for(trained=None):
    """A fake-model pipeline; `trained` is the record the model carries (None: a model saved without one)."""
    tok = tokenizers()
    model = fake_model(tok)
    if trained is not None:
        model.trained_layouts = trained
    spy = SpySampler(FAST)
    return GenerationPipeline(model=model, tokenizers=tok, sampler=spy), spy


def task_prompts(name: str) -> list[Prompt]:
    return [Prompt(key="u0"), Prompt(key="u1")] if name == "unconditional" else prompts(2)


# ---- the packed layouts of every built-in task --------------------------------------------------


@pytest.mark.parametrize(
    "name, trained, expected",
    [
        ("t2i", None, [T2I_SEQ]),
        ("i2t", None, [I2T_SEQ]),
        ("it2i", PAPER, [T2I_SEQ]),
        ("it2t", PAPER, [I2T_SEQ]),
        ("t2it", PAPER, [T2I_SEQ, I2T_SEQ]),
        ("t2it", TWINS, [T2I_SEQ, I2T_SEQ]),
        ("unconditional", DROPOUT, [DROPPED_CAPTION_SEQ, I2T_SEQ]),
        ("unconditional", None, [DROPPED_CAPTION_SEQ, I2T_SEQ]),
        ("inpaint", DROPOUT, [DROPPED_CAPTION_SEQ]),
        ("inpaint", None, [DROPPED_CAPTION_SEQ]),
        ("inpaint", PAPER, [IT2IT_SEQ, T2I_SEQ]),  # no dropout: caption the visible image, then T2I
        ("outpaint", PAPER, [IT2IT_SEQ, T2I_SEQ]),
        ("outpaint", DROPOUT, [DROPPED_CAPTION_SEQ]),
        ("t2t", PAPER, [DROPPED_IMAGE_SEQ]),  # IT2IT hides the whole image when its r is small
        ("t2t", DROPOUT, [DROPPED_IMAGE_SEQ]),
    ],
)
def test_every_model_call_is_a_training_layout_with_four_special_slots(name, trained, expected):
    pipeline, _ = pipeline_for(trained)
    made = pipeline.run(build(name), task_prompts(name), batch_size=4)
    model = pipeline.model
    assert passes(model) == expected
    for packed in model.calls:
        specials = packed.table == SPECIALS_TABLE
        assert packed.position[specials].tolist() == [0, 1, 2, 3]
        assert [len(packed.spans), packed.spans[0].begin, packed.spans[1].begin] == [2, 1, packed.spans[0].stop + 1]
    assert [sorted(g.outputs) for g in made] == [sorted(build(name).makes)] * 2  # a route's caption is no output


def test_t2i_and_i2t_tables_and_positions():
    pipeline, _ = pipeline_for(PAPER)
    pipeline.run(build("t2i"), prompts(1))
    packed = pipeline.model.calls[0]  # text: table 2, 8 slots; image: table 1, 16 slots
    assert packed.table.tolist() == [0, 0] + [2] * 8 + [0, 0] + [1] * 16
    assert packed.position.tolist() == [0, 1, *range(8), 2, 3, *range(16)]
    pipeline, _ = pipeline_for(PAPER)
    pipeline.run(build("i2t"), prompts(1))
    packed = pipeline.model.calls[0]
    assert packed.table.tolist() == [0, 0] + [1] * 16 + [0, 0] + [2] * 8
    assert packed.position.tolist() == [0, 1, *range(16), 2, 3, *range(8)]


def test_planned_layouts_of_each_task():
    space = fake_model(tokenizers()).token_space

    def planned(name, **options):
        return [str(layout) for layout in planned_layouts(build(name, **options), space)]

    assert planned("t2i") == ["[BOC] text [BOG] image"]
    assert planned("it2i") == ["[BOC] text [BOG] image(partly given)"]
    assert planned("it2t") == ["[BOC] image [BOG] text(partly given)"]
    assert planned("t2it") == ["[BOC] text [BOG] image", "[BOC] image [BOG] text"]
    assert planned("unconditional") == ["[BOC] MASK(text) [BOG] image", "[BOC] image [BOG] text"]
    assert planned("t2t") == ["[BOC] MASK(image) [BOG] text(partly given)"]
    inpaint = build("inpaint")
    assert [[str(x) for x in planned_layouts(route, space)] for route in inpaint.routes()] == [
        ["[BOC] MASK(text) [BOG] image(partly given)"],
        ["[BOC] image(partly MASK) [BOG] text", "[BOC] text [BOG] image(partly given)"],
    ]


# ---- t2it: the caption reads the image it just made -----------------------------------------------


def test_t2it_captions_its_own_generated_image_row_by_row():
    pipeline, spy = pipeline_for(PAPER)
    pipeline.model.table["image"] = uniform_over([8] * 16, 8)  # rows draw different images
    made = pipeline.run(build("t2it"), prompts(3), batch_size=3)
    (image_request, image_result), (caption_request, caption_result) = spy.seen
    generated = image_result.segments[0]
    assert len({tuple(row) for row in generated.tokens.tolist()}) == 3
    context, caption = caption_request.segments
    assert (context.modality, context.target, caption.modality, caption.target) == ("image", False, "text", True)
    assert torch.equal(context.tokens, generated.tokens) and bool(context.known.all())
    # Every call of the caption pass shows each row its own generated image, no prompt text.
    model, space = pipeline.model, pipeline.model.token_space
    caption_calls = [i for i, p in enumerate(model.calls) if sequence(space, p) == I2T_SEQ]
    assert caption_calls and all(torch.equal(model.seen(i, "image"), generated.tokens) for i in caption_calls)
    decoder = tokenizers()["image"]
    for row, generation in enumerate(made):
        picture = decoder.present(decoder.decode(generated.select(slice(row, row + 1)))[0])
        assert (generation.outputs["image"] == picture).all() and generation.outputs["text"] == "red circle"


def test_t2it_candidates_are_reranked_as_whole_pairs():
    class ImageSum:
        name, modalities = "image_sum", ("image", "text")

        def __init__(self):
            self.seen = []

        def scores(self, segments):
            self.seen.append({m: s.tokens.clone() for m, s in segments.items()})
            return segments["image"].tokens.sum(1).float()

    pipeline, spy = pipeline_for(PAPER)
    pipeline.model.table["image"] = uniform_over([8] * 16, 8)
    reranker = ImageSum()
    pipeline.run(build("t2it"), prompts(2), candidates=3, reranker=reranker, batch_size=6)
    assert len(spy.seen) == 2 and len(reranker.seen) == 1  # image then caption, scored once both are made
    (_, image_result), (caption_request, caption_result) = spy.seen
    assert caption_request.segments[0].tokens.shape[0] == 6  # each candidate's caption from its own image
    assert torch.equal(reranker.seen[0]["image"], image_result.segments[0].tokens)
    assert torch.equal(reranker.seen[0]["text"], caption_result.segments[0].tokens)


def test_t2it_is_the_same_for_the_same_seed():
    def run(seed):
        pipeline, _ = pipeline_for(PAPER)
        pipeline.model.table["image"] = uniform_over([8] * 16, 8)
        return [g.outputs["image"] for g in pipeline.run(build("t2it"), prompts(2), seed=seed)]

    assert all((a == b).all() for a, b in zip(run(1), run(1)))
    assert not all((a == b).all() for a, b in zip(run(1), run(2)))


# ---- refusals ---------------------------------------------------------------------------------------


REFUSALS = {
    ("unconditional", PAPER): (
        "task 'unconditional' needs the layout `[BOC] MASK(text) [BOG] image`, which this model never trained:"
        " a wholly MASK text context, which only condition dropout trains;"
        " remedy: `condition_dropout: 0.1` in the train stage (it had 0), or the task 't2it'"
    ),
    ("inpaint", TWINS): (
        "task 'inpaint' needs the layout `[BOC] MASK(text) [BOG] image(partly given)`, which this model never"
        " trained: a wholly MASK text context, which only condition dropout trains;"
        " remedy: `condition_dropout: 0.1` in the train stage (it had 0), or the task 'it2i'"
    ),
    ("t2t", TWINS): (
        "task 't2t' needs the layout `[BOC] MASK(image) [BOG] text(partly given)`, which this model never trained:"
        " a wholly MASK image context, which only condition dropout trains;"
        " remedy: `condition_dropout: 0.1` in the train stage (it had 0), or the task 'it2t'"
    ),
    ("t2it", TrainedLayouts(tasks=[T2I])): (
        "task 't2it' needs the layout `[BOC] image [BOG] text`, which this model never trained:"
        " no training task had context ['image'] and target ['text'];"
        " remedy: a task `{context: ['image'], target: ['text']}` in the train stage's tasks"
    ),
}


@pytest.mark.parametrize("name, trained", list(REFUSALS))
def test_a_task_the_model_never_trained_is_refused_before_any_sampling(name, trained):
    pipeline, spy = pipeline_for(trained)
    with pytest.raises(UserError) as caught:
        pipeline.run(build(name), task_prompts(name))
    assert str(caught.value) == REFUSALS[(name, trained)]
    assert spy.seen == [] and pipeline.model.calls == []
    with pytest.raises(UserError, match=re.escape(REFUSALS[(name, trained)])):
        pipeline.check(build(name), task_prompts(name), candidates=1, reranker=None)  # what `mmgen generate` calls


def test_the_command_line_prints_the_refusal_as_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mmgen.cli import main
    from mmgen.stage import StageInputs
    from test_generation_tasks import stage_folder

    pipeline, _ = pipeline_for(PAPER)
    loaded = {"train": pipeline.model, "tokenizers": pipeline.tokenizers}
    monkeypatch.setattr(StageInputs, "load", lambda self, key: loaded[key])
    run = tmp_path / "run"
    stage_folder(run, "train", "aaa", mtime=200)
    stage_folder(run, "tokenizers", "bbb", mtime=100)
    args = ["generate", "--task", "unconditional", "--count", "2", "--run", str(run), "--tracker", "none"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"error: {REFUSALS[('unconditional', PAPER)]}"
    assert pipeline.model.calls == []


def test_what_training_lacks_for_each_layout():
    def layout(context, target):
        return Layout(context=context, target=target)

    dropped_both = layout((("image", MASKED),), (("text", MASKED),))
    missing = PAPER.missing(dropped_both)
    assert missing.what == (
        "a wholly MASK image context beside a wholly MASK target, which IT2IT's one r never shows"
        " (it masks context and target at opposite ratios) and only condition dropout trains"
    )
    assert DROPOUT.missing(dropped_both) is None
    partly = layout((("image", PARTIAL),), (("text", MASKED),))
    assert PAPER.missing(partly) is None
    assert TWINS.missing(partly).what == (
        "a partly MASK image context, which only a task with `mask_context: true` (IT2IT) trains"
    )
    assert TWINS.missing(partly).remedy == (
        "a task like `it2it: {context: [image], target: [text], mask_context: true}` in the train stage's tasks"
    )
    assert DROPOUT.missing(layout((("text", GIVEN),), (("image", PARTIAL),))) is None
    # Two context segments (the old t2it caption step): no training task shows it.
    old = layout((("text", GIVEN), ("image", GIVEN)), (("text", MASKED),))
    assert DROPOUT.missing(old).what == "no training task had context ['text', 'image'] and target ['text']"


# ---- the record in model.json ---------------------------------------------------------------------


def test_the_train_stage_records_the_layouts_it_trained(tmp_path):
    from test_train_stage import PairsDataset, fake_tokenizers

    data = {
        "model": {"use": "magvlt", "preset": "tiny"},
        "objectives": ["mask"],
        "tasks": {
            "t2i": {"context": ["text"], "target": ["image"], "weight": 8.0},
            "i2t": {"context": ["image"], "target": ["text"], "weight": 0.0},  # never drawn
            "it2it": {"context": ["image"], "target": ["text"], "mask_context": True, "start_step": 1},
            "late": {"context": ["image"], "target": ["text"], "start_step": 2},  # starts after the last update
        },
        "condition_dropout": 0.25,
        "trainer": {"steps": 2, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": 2},
    }
    config = structure_attrs(TrainModelStage.Config, data, registry=registry())
    train_and_save(config, tokenizers=fake_tokenizers(), dataset=PairsDataset(), out_dir=tmp_path, registry=registry())
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["trained_layouts"] == {
        "tasks": {
            "t2i": {"context": ["text"], "target": ["image"], "mask_context": False},
            "it2it": {"context": ["image"], "target": ["text"], "mask_context": True},
        },
        "condition_dropout": 0.25,
        "dropped_context": True,
    }
    model = TrainModelStage.load(tmp_path, registry=registry())
    assert model.trained_layouts == TrainedLayouts(
        tasks=[T2I, Task(name="it2it", context=("image",), target=("text",), mask_context=True)],
        condition_dropout=0.25,
    )


def test_the_shipped_model_records_the_layouts_it_trained():
    (train,) = (ROOT / "checkpoints" / "shapes" / "artefacts").glob("captions-*")  # the shipped model
    # The caption phase's tasks, in its order (its layouts are also the first phase's).
    assert read_trained_layouts(train) == TrainedLayouts(
        tasks=[I2T, IT2IT, T2I], condition_dropout=0.1
    )


def test_a_model_saved_without_the_record_allows_every_layout(caplog, tmp_path):
    # A model.json as mmgen wrote it before the record existed: the shipped one without the key.
    (train,) = (ROOT / "checkpoints" / "shapes" / "artefacts").glob("captions-*")  # the shipped model
    description = json.loads((train / "model.json").read_text(encoding="utf-8"))
    del description["trained_layouts"]
    (tmp_path / "model.json").write_text(json.dumps(description), encoding="utf-8")
    assert read_trained_layouts(tmp_path) is None
    note = "the model records no trained layouts (saved before mmgen wrote them): every layout is allowed"
    pipeline, spy = pipeline_for(None)
    pipeline.run(build("unconditional"), task_prompts("unconditional"))  # dropped caption: allowed, unknown
    assert passes(pipeline.model) == [DROPPED_CAPTION_SEQ, I2T_SEQ]
    assert note not in caplog.messages  # a model in training (no attribute) gets no note
    model = fake_model(tokenizers())
    model.trained_layouts = None  # what TrainModelStage.load gives for a model.json without the record
    with caplog.at_level("INFO", logger="mmgen.generation.pipeline"):
        GenerationPipeline(model=model, tokenizers=tokenizers(), sampler=FAST)
    assert caplog.messages.count(note) == 1


def test_inpainting_through_a_caption_keeps_the_known_tokens_and_drops_the_caption():
    pipeline, spy = pipeline_for(PAPER)
    (made,) = pipeline.run(build("inpaint"), prompts(1))
    (caption_request, caption_result), (image_request, image_result) = spy.seen
    inside = box_mask((0.25, 0.25, 0.75, 0.75), (4, 4))[None]
    image_context = caption_request.segments[0]
    assert torch.equal(image_context.known, ~inside) and not image_context.target
    assert torch.equal(image_request.segments[0].tokens, caption_result.segments[0].tokens)  # T2I under that caption
    assert torch.equal(image_request.segments[1].known, ~inside)
    source = tokenizers()["image"].encode(stripes()[None]).tokens
    assert torch.equal(image_result.segments[0].tokens[~inside], source[~inside])
    assert set(made.outputs) == {"image"} and made.inputs == {"image": made.inputs["image"], "region": [0.25] * 2 + [0.75] * 2}


class NoDroppedContext(SpySampler):
    """A sampler that refuses, in its `check`, a request whose context is wholly MASK."""

    def check(self, request):
        if any(not s.target and not s.known.any() for s in request.segments):
            raise UserError("this sampler shows no wholly MASK context")


def test_a_route_the_sampler_refuses_is_passed_over_and_its_refusal_named():
    pipeline, _ = pipeline_for(DROPOUT)
    pipeline.sampler = NoDroppedContext(FAST)
    pipeline.run(build("inpaint"), prompts(1))
    assert passes(pipeline.model) == [IT2IT_SEQ, T2I_SEQ]  # the trained route the sampler runs
    pipeline.model.calls.clear()
    with pytest.raises(UserError) as caught:
        pipeline.run(build("unconditional"), task_prompts("unconditional"))
    assert str(caught.value) == "task 'unconditional': this sampler shows no wholly MASK context"
    assert pipeline.model.calls == []


# ---- guidance's unconditional pass ---------------------------------------------------------------


def guided(scale: float = 1.0) -> MaskGitSampler:
    return MaskGitSampler(fixed=FixedLengthOptions(steps=3, guidance=GuidanceOptions(scale=scale)), variable=FAST.variable)


def test_the_unconditional_pass_is_the_request_with_its_context_all_mask():
    tok = tokenizers()
    space = fake_model(tok).token_space
    request = build("t2i").request(
        {"text": tok["text"].encode(["red circle"])}, batch=1, space=space, device=torch.device("cpu")
    )
    (branch,) = guided().branch_requests(request, space=space)
    context, target = branch.segments
    assert [context.target, target.target] == [False, True]
    assert torch.equal(context.tokens, request.segments[0].tokens) and not bool(context.known.any())
    assert target is request.segments[1]  # the target as requested
    assert guided(0.0).branch_requests(request, space=space) == []  # no guidance, no extra pass
    i2t = build("i2t").request(
        {"image": tok["image"].encode(stripes()[None])}, batch=1, space=space, device=torch.device("cpu")
    )
    assert guided().branch_requests(i2t, space=space) == []  # the image guidance does not guide captions


@pytest.mark.parametrize("trained, scale, warned", [(PAPER, 1.0, True), (DROPOUT, 1.0, False), (PAPER, 0.0, False)])
def test_guidance_on_a_model_without_condition_dropout_is_one_warning(trained, scale, warned, caplog):
    tok = tokenizers()
    model = fake_model(tok)
    model.trained_layouts = trained
    pipeline = GenerationPipeline(model=model, tokenizers=tok, sampler=guided(scale))
    with caplog.at_level("WARNING", logger="mmgen.generation.pipeline"):
        made = pipeline.run(build("t2i"), prompts(2), batch_size=4)
    assert len(made) == 2  # the samples still come
    expected = (
        "task 't2i': guidance's unconditional pass shows the model `[BOC] MASK(text) [BOG] image`, which it never"
        " trained: a wholly MASK text context, which only condition dropout trains; remedy: `condition_dropout: 0.1`"
        " in the train stage (it had 0), or guidance scale 0"
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == ([expected] if warned else [])
