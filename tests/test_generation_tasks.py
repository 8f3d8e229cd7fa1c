"""Generation end to end: task requests, the pipeline (rerank, refine), outputs on disk, options, CLI and stages."""

from __future__ import annotations

import functools
import io
import json
import os
import re
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from generation_helpers import FakeModel, GridImageTokenizer, WordTokenizer, peaked, uniform_over
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.api import (
    ArtefactError,
    CENTRE,
    Cell,
    ConfigError,
    Generation,
    GenerateOptions,
    GenerationPipeline,
    GenerationTask,
    JointTokenSpace,
    Prompt,
    Record,
    Segment,
    StageContext,
    StageInputs,
    box_mask,
    build_sampler,
    declared_inputs,
    load_generations,
    load_registry,
    parse_box,
    plan_tasks,
    publish,
    render_grid,
    save_generations,
    structure_attrs,
    structure_spec,
)
from mmgen.cli import main
from mmgen.generate_command import command_line_prompts, option_data
from mmgen.plugins.refiners.caption_refine import CaptionRefiner
from mmgen.plugins.refiners.refine_config import RefineConfig
from mmgen.plugins.rerankers.cycle import CycleReranker
from mmgen.plugins.stages.evaluate import EvaluateStage, metrics_table
from mmgen.plugins.stages.generate import GenerateStage, example
from mmgen.plugins.tasks.builtin import TASKS, half_words, infill_span
from mmgen.plugins.tasks.text_cleanup import clean_caption
from mmgen.plugins.tasks.vqa import VisualQuestionAnswering
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions
from mmgen.stage_folder import mark_done, newest_finished, read_done

WORDS = ("a", "red", "blue", "circle", "square", "big", "small")
FAST = MaskGitSampler(fixed=FixedLengthOptions(steps=3), variable=VariableLengthOptions(steps=3))


@functools.cache
def registry():
    return load_registry()


def invoke_generate(args: list[str]):
    """`mmgen generate ARGS` as the command line runs it (one-line errors with exit status 2 come from `main`)."""
    return CliRunner().invoke(main, ["generate", *args])


def build(name: str, **options):
    """A registered task, built from its recipe data the way the generate stage and CLI build it."""
    return registry().build(structure_spec("tasks", {"use": name, **options}, path="task", registry=registry()))


def tokenizers():
    return {"image": GridImageTokenizer(grid=(4, 4), size=16, vocab=8), "text": WordTokenizer(words=WORDS, length=8)}


def joint_space(tok):
    """The image then the text tokenizer's space, whatever their modality names."""
    return JointTokenSpace(spaces=tuple(t.token_space for t in tok.values()))


def tiny_magvlt(space):
    from mmgen.plugins.models.magvlt import MagvltModel
    from mmgen.plugins.models.presets import architecture

    torch.manual_seed(0)
    return MagvltModel(token_space=space, architecture=architecture("tiny"))


class SpySampler:
    """Records each request and result of the sampler it wraps."""

    name = "spy"

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def generate(self, model, request, *, generator):
        result = self.inner.generate(model, request, generator=generator)
        self.seen.append((request, result))
        return result


def stripes() -> torch.Tensor:
    """A 16x16 image whose 4x4 token grid reads 0..7 levels row by row (two tokens per level)."""
    levels = (torch.arange(16) // 2).view(4, 4)
    pixels = ((levels.float() + 0.5) * 32).round().to(torch.uint8)
    return pixels.repeat_interleave(4, 0).repeat_interleave(4, 1).expand(3, 16, 16).clone()


def stripes_decoded() -> np.ndarray:
    """The stripes through the grid tokenizer and back, as a Generation holds a picture: uint8 [H, W, 3]."""
    tok = tokenizers()["image"]
    return tok.present(tok.decode(tok.encode(stripes()[None]))[0])


def prompts(n=2, text="a big red circle"):
    return [Prompt(key=f"p{i}", items={"text": text, "image": stripes()}, reference={"index": i}) for i in range(n)]


def _png(image: torch.Tensor) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- pure pieces ----------------------------------------------------------------------------------


def test_registry_holds_the_builtin_tasks_with_their_modalities():
    # An installed plugin package (mmgen-audio's t2a, ...) may add tasks beside the built-in ones.
    from mmgen.plugins.tasks.in_context import InContext

    tasks = (*TASKS, VisualQuestionAnswering, InContext)
    builtin = [e.name for e in registry().entries("tasks") if e.provider.package == "mmgen"]
    assert builtin == sorted(t.name for t in tasks)
    assert all(registry().get("tasks", t.name) is t for t in tasks)
    table = {}
    for cls in tasks:
        task = build(cls.name)
        assert isinstance(task, GenerationTask) and type(task) is cls and task.summary
        table[task.name] = (task.needs, task.makes)
    assert table == {
        "t2i": (("text",), ("image",)),
        "i2t": (("image",), ("text",)),
        "inpaint": (("image",), ("image",)),
        "outpaint": (("image",), ("image",)),
        "t2t": (("text",), ("text",)),
        "it2i": (("image", "text"), ("image",)),
        "it2t": (("image", "text"), ("text",)),
        "t2it": (("text",), ("image", "text")),
        "unconditional": ((), ("image", "text")),
        "vqa": (("image", "text"), ("text",)),
        "in_context": (("text",), ("image",)),  # direction t2i by default; i2t swaps them
    }


def test_clean_caption_cuts_at_the_first_period_and_drops_repeats():
    assert clean_caption("a red red circle. a blue square") == "a red circle"
    assert clean_caption("a a a big  big circle") == "a big circle"
    assert clean_caption("red circle red circle") == "red circle red circle"
    # Tasks clean their generated text, and only their text.
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    assert build("i2t").finish("text", ["a red red circle. a"]) == ["a red circle"]
    assert build("t2i").finish("image", [image])[0] is image
    assert build("t2it", text="caption").finish("text", ["a a red"]) == ["a a red"]  # not its text modality


def test_infill_span_is_the_middle_half():
    assert [infill_span(n) for n in (1, 2, 4, 5, 8)] == [(0, 1), (0, 1), (1, 3), (1, 4), (2, 6)]


def test_box_mask_covers_overlapping_cells():
    assert box_mask((0.25, 0.25, 0.75, 0.75), (4, 4)).view(4, 4).int().tolist() == [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ]
    assert box_mask((0.0, 0.5, 0.3, 1.0), (4, 4)).view(4, 4).int().tolist() == [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    assert box_mask((0.25, 0.25, 0.75, 0.75), (16, 16)).view(16, 16)[4:12, 4:12].all()
    assert box_mask((0.25, 0.25, 0.75, 0.75), (16, 16)).sum() == 64  # the MAGVLT demo's centre 8x8
    with pytest.raises(ValueError, match="top < bottom"):
        parse_box("0.5,0,0.5,1")
    with pytest.raises(ValueError, match="four numbers"):
        parse_box("0.5,0,1")


def test_region_is_a_task_option_checked_when_structured():
    assert build("inpaint").region == CENTRE == (0.25, 0.25, 0.75, 0.75)
    corner = build("outpaint", region=[0, 0.5, 0.5, 1])
    assert corner.region == (0.0, 0.5, 0.5, 1.0) and corner.describe() == {"region": [0.0, 0.5, 0.5, 1.0]}
    assert build("t2i").describe() == {}
    with pytest.raises(ConfigError, match=r"task: .*0 <= top < bottom <= 1"):
        build("it2i", region=[0.5, 0, 0.5, 1])
    with pytest.raises(ConfigError, match="task.region: unknown option"):
        build("t2i", region=[0, 0, 1, 1])


def test_task_prompts_edit_with_the_next_caption_and_complete_half_a_caption():
    tok = tokenizers()
    png = _png(stripes())
    records = [
        Record(key=f"test-{i}", modality="image", data=png, captions=(c, "other"), meta={"i": i})
        for i, c in enumerate(["a red circle in the top", "a blue square"])
    ]
    examples = [example(r, tok, caption_modality="text") for r in records]
    assert examples[1].items["text"] == "a blue square" and examples[1].reference == {"i": 1}
    edits = build("it2i").prompts(examples)
    assert [p.items["text"] for p in edits] == ["a blue square", "a red circle in the top"]
    assert torch.equal(edits[0].items["image"], stripes()) and edits[1].reference == {"i": 1}
    assert [p.items["text"] for p in build("it2t").prompts(examples)] == ["a red circle", "a"]
    captioning = build("i2t").prompts(examples)
    assert [set(p.items) for p in captioning] == [{"image"}, {"image"}] and captioning[0].key == "test-0"
    assert [p.items for p in build("unconditional").prompts(examples)] == [{}, {}]
    assert half_words("one") == "one"
    uncaptioned = example(attrs.evolve(records[0], captions=()), tok, caption_modality="text")
    assert set(uncaptioned.items) == {"image"}


def test_command_line_prompts_pair_one_with_many(tmp_path):
    tok = tokenizers()
    (tmp_path / "in.png").write_bytes(_png(stripes()))
    image = [tmp_path / "in.png"]
    pairs = command_line_prompts(build("it2t"), tok, texts=["a", "a red"], files=image, count=None)
    assert [(p.key, p.items["text"]) for p in pairs] == [("it2t-0000", "a"), ("it2t-0001", "a red")]
    assert torch.equal(pairs[0].items["image"], stripes()) and pairs[0].items["image"] is pairs[1].items["image"]
    unconditional = command_line_prompts(build("unconditional"), tok, texts=[], files=[], count=3)
    assert [(p.key, p.items) for p in unconditional] == [(f"unconditional-000{i}", {}) for i in range(3)]
    assert len(command_line_prompts(build("t2i"), tok, texts=["a"], files=[], count=3)) == 1  # count: no-input tasks
    with pytest.raises(ValueError, match=r"task 't2i' needs a text \(--prompt or --prompts-file\)"):
        command_line_prompts(build("t2i"), tok, texts=[], files=image, count=None)
    with pytest.raises(ValueError, match=r"task 'i2t' needs an image file \(--image\)"):
        command_line_prompts(build("i2t"), tok, texts=["a"], files=[], count=None)
    with pytest.raises(ValueError, match="got 3 image, 2 text; give equal numbers, or one"):
        command_line_prompts(build("it2i"), tok, texts=["a", "b"], files=image * 3, count=None)


# ---- every task on a randomly initialised tiny MAGVLT --------------------------------------------


def run_on_tiny(task, *, prompt_list=None, sampler=None, seed=0, **options):
    tok = tokenizers()
    spy = SpySampler(sampler or FAST)
    pipeline = GenerationPipeline(model=tiny_magvlt(joint_space(tok)), tokenizers=tok, sampler=spy)
    generations = pipeline.run(build(task, **options), prompt_list or prompts(), seed=seed, batch_size=4)
    ((request, result),) = spy.seen
    return generations, request, result


def layout(request):
    return [(s.modality, s.target) for s in request.segments]


def test_t2i_and_i2t_layouts_follow_magvlt():
    generations, request, result = run_on_tiny("t2i")
    assert layout(request) == [("text", False), ("image", True)]
    assert request.segments[0].known.sum(1).tolist() == [5, 5]  # 4 words + EOS
    assert not request.segments[1].known.any()
    assert [g.outputs["image"].shape for g in generations] == [(16, 16, 3)] * 2
    assert generations[0].inputs == {"text": "a big red circle"} and generations[1].reference == {"index": 1}
    assert [(g.task, g.key) for g in generations] == [("t2i", "p0"), ("t2i", "p1")]

    generations, request, result = run_on_tiny("i2t")
    assert layout(request) == [("image", False), ("text", True)]
    assert request.segments[1].lengths is None  # predicted by the length head
    for generation in generations:
        assert set(generation.outputs) == {"text"} and set(generation.inputs) == {"image"}
        assert all(word in WORDS for word in generation.outputs["text"].split())
        assert np.array_equal(generation.inputs["image"], stripes().permute(1, 2, 0).numpy())  # given, presented


@pytest.mark.parametrize(
    "task, keep_inside, region",
    [
        ("inpaint", False, None),
        ("outpaint", True, None),
        ("it2i", False, None),
        ("inpaint", False, (0.0, 0.5, 0.5, 1.0)),
    ],
)
def test_region_tasks_keep_the_tokens_they_should(task, keep_inside, region):
    options = {} if region is None else {"region": list(region)}
    generations, request, result = run_on_tiny(task, **options)
    context, image = request.segments
    inside = box_mask(region or (0.25, 0.25, 0.75, 0.75), (4, 4)).expand(2, 16)
    assert torch.equal(image.known, inside if keep_inside else ~inside)
    assert torch.equal(result.segments[0].tokens[image.known], image.tokens[image.known])
    assert context.modality == "text" and not context.target
    assert context.known.any() == (task == "it2i")  # inpainting drops the caption: all MASK
    source = stripes_decoded()
    pixels = torch.from_numpy(generations[0].outputs["image"])
    kept = torch.from_numpy(np.kron(image.known[0].view(4, 4).numpy(), np.ones((4, 4), dtype=bool)).astype(bool))
    assert torch.equal(pixels[kept], torch.from_numpy(source)[kept])
    assert generations[0].inputs["region"] == list(region or (0.25, 0.25, 0.75, 0.75))


def test_t2t_infills_the_middle_half_under_a_dropped_image():
    text = "a big red circle square blue"  # 6 words: span [1, 4) is unknown
    generations, request, result = run_on_tiny("t2t", prompt_list=prompts(text=text))
    image, caption = request.segments
    assert (image.modality, image.target, image.known.any()) == ("image", False, False)
    assert caption.known[0].tolist() == [True, False, False, False, True, True, True, False]
    assert caption.lengths.tolist() == [7, 7]
    tokens = result.segments[0].tokens
    assert tokens[:, [0, 4, 5, 6]].tolist() == [[1, 5, 3, 0]] * 2


def test_it2t_completes_a_known_prefix():
    generations, request, result = run_on_tiny("it2t", prompt_list=prompts(text="a big"))
    caption = request.segments[1]
    assert caption.known[0].tolist() == [True, True] + [False] * 6 and caption.lengths is None
    assert result.segments[0].tokens[:, :2].tolist() == [[1, 6]] * 2
    assert (result.segments[0].lengths >= 3).all()  # the prefix and one new token (no fixed EOS by default)
    assert all(g.outputs["text"].startswith("a") for g in generations)


@pytest.mark.parametrize("task", ["t2it", "unconditional"])
def test_pair_tasks_generate_image_then_caption(task):
    # Two requests: T2I (the prompt, or a dropped caption), then I2T from the image just made.
    prompt_list = prompts() if task == "t2it" else [Prompt(key="u0"), Prompt(key="u1")]
    tok = tokenizers()
    spy = SpySampler(FAST)
    pipeline = GenerationPipeline(model=tiny_magvlt(joint_space(tok)), tokenizers=tok, sampler=spy)
    generations = pipeline.run(build(task), prompt_list, batch_size=4)
    (image_request, image_result), (caption_request, caption_result) = spy.seen
    assert layout(image_request) == [("text", False), ("image", True)]
    assert image_request.segments[0].known.any() == (task == "t2it")
    assert layout(caption_request) == [("image", False), ("text", True)]
    assert torch.equal(caption_request.segments[0].tokens, image_result.segments[0].tokens)
    for generation in generations:
        assert set(generation.outputs) == {"image", "text"} and generation.outputs["image"].dtype == np.uint8
        assert generation.inputs == ({"text": "a big red circle"} if task == "t2it" else {})


def test_same_seed_same_generations_and_another_seed_differs():
    first, _, _ = run_on_tiny("t2i", seed=3)
    again, _, _ = run_on_tiny("t2i", seed=3)
    other, _, _ = run_on_tiny("t2i", seed=4)
    assert all(np.array_equal(a.outputs["image"], b.outputs["image"]) for a, b in zip(first, again))
    assert not all(np.array_equal(a.outputs["image"], b.outputs["image"]) for a, b in zip(first, other))


# ---- exact outputs with the fake model -------------------------------------------------------------


def fake_model(tok):
    # Image: token p = p // 2 (the stripes' levels). Text: "red red circle" then EOS; length head: class 3 (length 4).
    names = [space.name for space in joint_space(tok).spaces]
    return FakeModel(
        joint_space(tok),
        {names[0]: peaked([p // 2 for p in range(16)], 8), names[1]: peaked([2, 2, 4, 0, 0, 0, 0, 0], 8)},
        length_logits=torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0]),
    )


def fake_pipeline(*, sampler=None):
    tok = tokenizers()
    spy = SpySampler(sampler or FAST)
    return GenerationPipeline(model=fake_model(tok), tokenizers=tok, sampler=spy), spy


def test_decoded_outputs_are_exact_and_captions_post_processed():
    pipeline, _ = fake_pipeline()
    t2i = pipeline.run(build("t2i"), prompts(1))[0]
    assert t2i.outputs["image"].dtype == np.uint8 and np.array_equal(t2i.outputs["image"], stripes_decoded())
    i2t = pipeline.run(build("i2t"), prompts(1))[0]
    assert i2t.outputs == {"text": "red circle"}  # "red red circle": the repeat dropped


def test_tasks_use_the_modality_names_their_config_gives():
    tok = {
        "picture": GridImageTokenizer(grid=(4, 4), size=16, vocab=8, modality="picture"),
        "caption": WordTokenizer(words=WORDS, length=8, modality="caption"),
    }
    spy = SpySampler(FAST)
    pipeline = GenerationPipeline(model=fake_model(tok), tokenizers=tok, sampler=spy)
    (made,) = pipeline.run(build("t2it", image="picture", text="caption"), [Prompt(key="k", items={"caption": "a"})])
    assert [layout(request) for request, _ in spy.seen] == [
        [("caption", False), ("picture", True)],
        [("picture", False), ("caption", True)],
    ]
    assert made.inputs == {"caption": "a"} and made.outputs["caption"] == "red circle"  # cleaned: its text
    assert np.array_equal(made.outputs["picture"], stripes_decoded())
    with pytest.raises(ValueError, match="task 't2it' uses modality 'text', which has no tokenizer here"):
        pipeline.run(build("t2it"), [Prompt(key="k", items={"text": "a"})])
    assert len(spy.seen) == 2


class TokenSumReranker:
    """Scores a row by the sum of its image tokens; records the segments it is given."""

    name = "token_sum"

    def __init__(self, modalities=("image", "text")):
        self.modalities = modalities
        self.calls = []

    def scores(self, segments):
        self.calls.append({m: s.tokens.clone() for m, s in segments.items()})
        return segments["image"].tokens.sum(1).float()


def test_candidates_are_reranked_per_prompt():
    reranker = TokenSumReranker()
    pipeline, spy = fake_pipeline(sampler=MaskGitSampler(fixed=FixedLengthOptions(steps=2)))
    pipeline.model.table["image"] = uniform_over([8] * 16, 8)
    generations = pipeline.run(build("t2i"), prompts(3), candidates=4, reranker=reranker, batch_size=8)
    assert [call["image"].shape[0] for call in reranker.calls] == [8, 4]  # 2 prompts x 4 rows, then the last prompt
    # The reranker sees the given caption beside each generated image.
    assert torch.equal(reranker.calls[0]["text"], tokenizers()["text"].encode(["a big red circle"] * 8).tokens)
    for call, (_, result) in zip(reranker.calls, spy.seen):
        assert torch.equal(call["image"], result.segments[0].tokens)
    all_rows = torch.cat([result.segments[0].tokens for _, result in spy.seen])
    best = all_rows.view(3, 4, 16).sum(2).argmax(1)
    assert best.tolist() != [0, 0, 0]  # keeping each prompt's first row would not pass
    decoder = tokenizers()["image"]
    for prompt_index, generation in enumerate(generations):
        row = all_rows[prompt_index * 4 + best[prompt_index]]
        expected = decoder.present(decoder.decode(Segment.full("image", row[None]))[0])
        assert np.array_equal(generation.outputs["image"], expected)


def test_a_reranker_scores_generated_segments_over_given_ones():
    reranker = TokenSumReranker()
    pipeline, spy = fake_pipeline()
    pipeline.run(build("t2it"), prompts(1), candidates=2, reranker=reranker)
    (_, (_, result)) = spy.seen
    (call,) = reranker.calls
    assert set(call) == {"image", "text"}
    assert torch.equal(call["text"], result.segments[0].tokens)  # the generated caption, not the prompt
    assert call["text"][0, :4].tolist() == [2, 2, 4, 0]


class RecordingRefiner:
    """Records what it is asked to refine; writes word `word` (a WordTokenizer id) over row r's position r."""

    name = "recording"
    modalities, refines = ("image", "text"), ("text",)

    def __init__(self, word):
        self.word, self.calls = word, []

    def refine(self, inputs, outputs):
        text = outputs["text"]
        self.calls.append((inputs["image"].tokens.clone(), text.tokens.clone(), text.lengths.clone()))
        tokens = text.tokens.clone()
        tokens[torch.arange(len(tokens)), torch.arange(len(tokens))] = self.word
        return {**outputs, "text": Segment(modality=text.modality, tokens=tokens, lengths=text.lengths)}


def blue():
    return tokenizers()["text"].encode(["blue"]).tokens[0, 0].item()


def test_refinement_runs_once_over_every_prompts_chosen_caption_in_prompt_order():
    pipeline, spy = fake_pipeline()
    refiner = RecordingRefiner(word=blue())
    generations = pipeline.run(
        build("i2t"), prompts(3), candidates=2, reranker=TokenSumReranker(), refiner=refiner, batch_size=2
    )  # three sampled batches of one prompt
    assert len(spy.seen) == 3 and len(refiner.calls) == 1
    images, texts, lengths = refiner.calls[0]
    assert texts.shape[0] == 3 and lengths.tolist() == [4, 4, 4]  # the chosen captions, "red red circle" + EOS
    assert torch.equal(images, tokenizers()["image"].encode(stripes()[None].expand(3, -1, -1, -1)).tokens)
    # Row r got "blue" at position r: "blue red circle", "red blue circle", "red red blue" (repeat dropped).
    assert [g.outputs["text"] for g in generations] == ["blue red circle", "red blue circle", "red blue"]
    assert [g.key for g in generations] == ["p0", "p1", "p2"]


class OverwritingRefiner:
    """Writes `word` over every token of every caption."""

    name = "overwriting"
    modalities, refines = ("image", "text"), ("text",)

    def __init__(self, word):
        self.word = word

    def refine(self, inputs, outputs):
        text = outputs["text"]
        return {**outputs, "text": Segment(modality="text", tokens=torch.full_like(text.tokens, self.word), lengths=text.lengths)}


def test_refinement_never_changes_what_the_task_gave():
    pipeline, _ = fake_pipeline()
    made = pipeline.run(build("it2t"), prompts(2, text="a big"), refiner=OverwritingRefiner(blue()))
    # The given prefix "a big" stays; every generated token became "blue" (repeats dropped by the clean-up).
    assert [g.outputs["text"] for g in made] == ["a big blue"] * 2


def test_refinement_calls_hold_at_most_refine_rows_captions(monkeypatch):
    import mmgen.generation.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "REFINE_ROWS", 2)
    pipeline, _ = fake_pipeline()
    refiner = RecordingRefiner(word=blue())
    generations = pipeline.run(
        build("i2t"), prompts(3), candidates=2, reranker=TokenSumReranker(), refiner=refiner, batch_size=2
    )
    assert [texts.shape[0] for _, texts, _ in refiner.calls] == [2, 1]
    # The third caption is row 0 of the second call: "blue" at position 0.
    assert [g.outputs["text"] for g in generations] == ["blue red circle", "red blue circle", "blue red circle"]


def test_candidates_need_a_reranker_that_can_score_the_task():
    pipeline, spy = fake_pipeline()
    with pytest.raises(ValueError, match="task 't2i': 4 candidates per prompt need a reranker"):
        pipeline.run(build("t2i"), prompts(1), candidates=4)
    with pytest.raises(ValueError, match="task 'inpaint': 4 candidates per prompt need a reranker"):
        pipeline.run(build("inpaint"), prompts(1), candidates=4)
    with pytest.raises(ValueError, match="candidates must be >= 1, got 0"):
        pipeline.run(build("t2i"), prompts(1), candidates=0)
    message = (
        "task 'inpaint' has no ['text'] for the 'token_sum' reranker to score (it gives ['image'] and makes ['image'])"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline.run(build("inpaint"), prompts(1), candidates=4, reranker=TokenSumReranker())
    with pytest.raises(ValueError, match=re.escape("task 't2t' has no ['image'] for the 'token_sum' reranker")):
        pipeline.run(build("t2t"), prompts(1), reranker=TokenSumReranker())  # checked even for one candidate
    assert spy.seen == [] and pipeline.model.calls == []  # every error came before any sampling
    # A reranker of the image alone can pick among inpaintings.
    pipeline.model.table["image"] = uniform_over([8] * 16, 8)
    image_only = TokenSumReranker(modalities=("image",))
    generations = pipeline.run(build("inpaint"), prompts(2), candidates=4, reranker=image_only)
    ((request, result),) = spy.seen
    assert request.segments[1].tokens.shape[0] == 8 and [set(c) for c in image_only.calls] == [{"image"}]
    rows = result.segments[0].tokens.view(2, 4, 16)
    for prompt_index, generation in enumerate(generations):
        row = rows[prompt_index, rows[prompt_index].sum(1).argmax()]
        decoder = tokenizers()["image"]
        expected = decoder.present(decoder.decode(Segment.full("image", row[None]))[0])
        assert np.array_equal(generation.outputs["image"], expected)


def test_prompt_missing_an_input_or_an_unknown_task_is_rejected():
    pipeline, spy = fake_pipeline()
    with pytest.raises(ValueError, match=re.escape("task 'i2t' needs ['image'] in every prompt; prompt 'x' has none")):
        pipeline.run(build("i2t"), [*prompts(1), Prompt(key="x", items={"text": "a"})])
    with pytest.raises(ValueError, match=re.escape("task 'it2i' needs ['text'] in every prompt; prompt 'y' has none")):
        pipeline.run(build("it2i"), [Prompt(key="y", items={"image": stripes(), "text": None})])
    assert spy.seen == []
    with pytest.raises(ConfigError, match="task.use: no task named 'x2y'"):
        build("x2y")


def test_no_prompts_give_no_generations():
    pipeline, spy = fake_pipeline()
    assert pipeline.run(build("t2i"), []) == [] and spy.seen == []


def test_a_refiner_the_task_cannot_feed_is_an_error_before_sampling():
    pipeline, spy = fake_pipeline()
    refiner = CaptionRefiner(pipeline.model, config=RefineConfig())
    message = "task 't2i' cannot feed the 'caption_refine' refiner: it refines ['text'] and reads ['image', 'text']"
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline.run(build("t2i"), prompts(1), refiner=refiner)  # t2i makes no caption to refine
    assert spy.seen == []


# ---- outputs on disk ---------------------------------------------------------------------------------


def test_generations_round_trip_through_disk_with_grids(tmp_path):
    pipeline, _ = fake_pipeline()
    made = pipeline.run(build("t2it"), prompts(2)) + pipeline.run(build("inpaint"), prompts(1))
    publish(made, tmp_path, columns=2)
    back = load_generations(tmp_path)
    assert [(g.task, g.key) for g in back] == [("t2it", "p0"), ("t2it", "p1"), ("inpaint", "p0")]
    for original, loaded in zip(made, back):
        assert loaded.outputs.keys() == original.outputs.keys() and loaded.reference == original.reference
        assert np.array_equal(loaded.outputs["image"], original.outputs["image"])
    assert back[0].outputs["text"] == "red circle" and back[0].inputs == {"text": "a big red circle"}
    assert back[2].inputs["region"] == [0.25, 0.25, 0.75, 0.75]
    assert np.array_equal(back[2].inputs["image"], made[2].inputs["image"])
    line = json.loads((tmp_path / "generations.jsonl").read_text().splitlines()[2])
    assert line["inputs"]["image"] == {"png": "images/inpaint/00002-p0-input-image.png"}
    assert sorted(p.name for p in tmp_path.glob("grid-*.png")) == ["grid-inpaint.png", "grid-t2it.png"]


def test_arrays_other_than_pictures_round_trip_as_npy(tmp_path):
    depth = np.arange(6, dtype=np.float32).reshape(2, 3)
    grey = np.full((4, 4), 7, dtype=np.uint8)  # uint8 but not [H, W, 3]: not a picture
    made = Generation(task="x", key="k/1", inputs={"n": 3}, outputs={"depth": depth, "grey": grey})
    save_generations([made], tmp_path)
    line = json.loads((tmp_path / "generations.jsonl").read_text())
    assert line["outputs"] == {
        "depth": {"npy": "images/x/00000-k_1-output-depth.npy"},
        "grey": {"npy": "images/x/00000-k_1-output-grey.npy"},
    }
    (back,) = load_generations(tmp_path)
    assert back.inputs == {"n": 3} and back.outputs["depth"].dtype == np.float32
    assert np.array_equal(back.outputs["depth"], depth) and np.array_equal(back.outputs["grey"], grey)


def test_grid_places_scaled_images_and_draws_text_under_them():
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    cells = [Cell(images=(red, red), lines=("in: a red square",)), Cell(images=(red,), lines=())]
    grid = render_grid(cells, columns=2, image_size=32, padding=6)
    gap, cell_width = 18, 2 * 32 + 6
    assert grid.shape[1] == 2 * (cell_width + gap) + gap
    assert (grid[gap : gap + 32, gap : gap + 32] == [255, 0, 0]).all()
    assert (grid[gap : gap + 32, gap + 38 : gap + 70] == [255, 0, 0]).all()
    text_band = grid[gap + 38 :, gap : gap + cell_width]
    assert (text_band < 128).any()  # the caption is drawn under the images
    second = grid[gap + 38 :, 2 * gap + cell_width :]
    assert (second == 255).all()  # no text there


# ---- options: checked early, built by name ------------------------------------------------------------


def options(data):
    return structure_attrs(GenerateOptions, data, registry=registry())


def test_generate_options_name_only_tasks_that_run_and_a_reranker_for_candidates():
    with pytest.raises(ValueError, match=r"candidates given for tasks not run: \['i2t'\] \(tasks: \['t2i'\]\)"):
        options({"candidates": {"i2t": 64}}).check_tasks(["t2i"])
    with pytest.raises(ValueError, match=r"rerank given for tasks not run: \['i2t'\]"):
        options({"rerank": {"i2t": "cycle"}}).check_tasks(["t2i"])
    with pytest.raises(ValueError, match=r"refine given for tasks not run: \['i2t'\]"):
        options({"refine": {"i2t": "caption_refine"}}).check_tasks(["t2i"])
    with pytest.raises(ValueError, match=r"candidates.t2i is 8, so t2i needs a reranker to pick one: .*`rerank: \{t2i: clip\}` in a recipe"):
        options({"candidates": {"t2i": 8}}).check_tasks(["t2i"])
    with pytest.raises(ConfigError, match="candidates.t2i: must be > 0, got 0"):
        options({"candidates": {"t2i": 0}})
    with pytest.raises(ConfigError, match="rerank.t2i.use: no reranker named 'clop'; did you mean 'clip'"):
        options({"rerank": {"t2i": "clop"}})
    options({"candidates": {"t2i": 8, "i2t": 1}, "rerank": {"t2i": "clip"}}).check_tasks(["t2i", "i2t"])


class FakeInputs:
    """StageInputs stand-in: `load(key)` gives a prepared object and records the key."""

    def __init__(self, outputs):
        self.outputs, self.loaded = outputs, []

    def load(self, key):
        self.loaded.append(key)
        return self.outputs[key]


class FakeClip:
    def eval(self):
        return self


def test_plan_tasks_builds_rerankers_and_refiners_by_name_with_deps():
    tok = tokenizers()
    model = fake_model(tok)
    clip = FakeClip()
    inputs = FakeInputs({"clip": clip})
    chosen = options(
        {
            "candidates": {"i2t": 4, "t2i": 2},
            "rerank": {"i2t": {"use": "cycle", "passes": 1}, "t2i": "clip"},
            "refine": {"i2t": {"use": "caption_refine", "sweeps": 2}},
        }
    )
    assert declared_inputs(chosen) == [("rerank.t2i.clip_stage", "clip")]  # what `mmgen generate` loads for it
    specs = [structure_spec("tasks", name, path="tasks", registry=registry()) for name in ("t2i", "i2t", "t2t")]
    deps = {"model": model, "tokenizers": tok, "inputs": inputs, "device": "cpu"}
    t2i, i2t, t2t = plan_tasks(chosen, specs, registry=registry(), deps=deps)
    assert (t2i.task.name, t2i.candidates, t2i.reranker.model, t2i.refiner) == ("t2i", 2, clip, None)
    assert t2i.reranker.name == "clip" and t2i.reranker.modalities == ("image", "text") and inputs.loaded == ["clip"]
    assert isinstance(i2t.reranker, CycleReranker) and (i2t.reranker.model, i2t.reranker.passes) == (model, 1)
    assert isinstance(i2t.refiner, CaptionRefiner) and i2t.refiner.model is model
    assert (i2t.refiner.config.sweeps, i2t.refiner.scorer.passes) == (2, 2)  # the refiner's own cycle passes
    assert (t2t.task.name, t2t.candidates, t2t.reranker, t2t.refiner) == ("t2t", 1, None, None)
    with pytest.raises(ValueError, match=r"each task may be listed once; got \['t2i', 't2i'\]"):
        plan_tasks(options({}), specs[:1] * 2, registry=registry(), deps=deps)
    with pytest.raises(ValueError, match=r"candidates given for tasks not run: \['t2i'\]"):
        plan_tasks(chosen, specs[1:], registry=registry(), deps=deps)


def test_build_sampler_takes_the_options_sampler_or_the_models_default():
    model = fake_model(tokenizers())
    default = build_sampler(options({}), model=model, registry=registry())
    assert isinstance(default, MaskGitSampler) and default.fixed == FixedLengthOptions()
    three_steps = options({"sampler": {"use": "maskgit", "fixed": {"steps": 3}}})
    chosen = build_sampler(three_steps, model=model, registry=registry())
    assert isinstance(chosen, MaskGitSampler) and chosen.fixed.steps == 3
    model.default_sampler = "maskgot"  # the model names its sampler: that one is built, so a typo shows
    with pytest.raises(ConfigError, match="sampler.use: no sampler named 'maskgot'"):
        build_sampler(options({}), model=model, registry=registry())


# ---- the command line -----------------------------------------------------------------------------


def test_option_data_maps_flags_and_set_paths():
    data, task = option_data(
        "i2t",
        sampler=None,
        candidates=4,
        rerank="cycle",
        refine="caption_refine",
        overrides=("sampler.fixed.steps=8", "rerank.passes=1", "refine.sweeps=2", "task.region=[0, 0, 0.5, 0.5]"),
        seed=3,
        batch_size=8,
    )
    assert data == {
        "seed": 3,
        "batch_size": 8,
        "candidates": {"i2t": 4},
        "rerank": {"i2t": {"use": "cycle", "passes": 1}},
        "refine": {"i2t": {"use": "caption_refine", "sweeps": 2}},
        "sampler": {"use": "maskgit", "fixed": {"steps": 8}},
    }
    assert task == {"use": "i2t", "region": [0, 0, 0.5, 0.5]}
    plain, task = option_data(
        "t2i", sampler="maskgit", candidates=1, rerank=None, refine=None, overrides=(), seed=0, batch_size=16
    )
    assert plain == {"seed": 0, "batch_size": 16, "candidates": {"t2i": 1}, "sampler": {"use": "maskgit"}}
    assert task == {"use": "t2i"}
    flags = {"sampler": None, "candidates": 1, "refine": None, "seed": 0, "batch_size": 1}
    with pytest.raises(ValueError, match=r"--set refine.sweeps=2: give --refine NAME first"):
        option_data("i2t", rerank="cycle", overrides=("refine.sweeps=2",), **flags)
    with pytest.raises(ValueError, match=r"--set steps=8: paths start with sampler\., rerank\., refine\. or task\."):
        option_data("i2t", rerank=None, overrides=("steps=8",), **flags)


def stage_folder(run: Path, key: str, digest: str, *, mtime: float | None) -> Path:
    """A stage folder under `run`, finished (DONE.json, touched at `mtime`) unless `mtime` is None."""
    folder = run / "artefacts" / f"{key}-{digest}"
    folder.mkdir(parents=True)
    if mtime is not None:
        mark_done(folder, key=key, use=key, digest=digest, seconds=1.0)
        os.utime(folder / "DONE.json", (mtime, mtime))
    return folder


def test_the_run_model_is_its_newest_finished_train_or_finetune_folder(tmp_path):
    from mmgen.api import ArtefactError, load_registry, newest_model

    registry = load_registry()
    run = tmp_path / "run"
    with pytest.raises(ArtefactError, match="no finished stage under .* makes a model"):
        newest_model(run, registry=registry)
    train = stage_folder(run, "train", "aaa", mtime=100)
    assert newest_model(run, registry=registry) == train
    captions = run / "artefacts" / "captions-ccc"  # a finetune stage under its own key
    captions.mkdir(parents=True)
    mark_done(captions, key="captions", use="finetune", digest="ccc", seconds=1.0)
    os.utime(captions / "DONE.json", (200, 200))
    stage_folder(run, "clip", "ddd", mtime=300)  # newer, but a CLIP reranker is not the generating model
    stage_folder(run, "finetune", "eee", mtime=None)  # newer, but unfinished
    assert newest_model(run, registry=registry) == captions


def test_cli_generates_with_stage_folders(tmp_path, monkeypatch):
    pipeline, _ = fake_pipeline()
    model, tok = pipeline.model, pipeline.tokenizers
    loads = []

    def fake_load(self, key):
        loads.append((key, self.folders[key], self.uses[key]))
        return {"train": model, "tokenizers": tok}[key]

    monkeypatch.setattr(StageInputs, "load", fake_load)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tmp_path / "run"
    train = stage_folder(run, "train", "aaa", mtime=200)
    stage_folder(run, "train", "zzz", mtime=None)  # newer but unfinished
    tokenizers_dir = stage_folder(run, "tokenizers", "bbb", mtime=100)
    (tmp_path / "in.png").write_bytes(_png(stripes()))
    out = tmp_path / "out"
    given = ["--image", str(tmp_path / "in.png"), "--run", str(run), "--seed", "1"]
    args = ["--task", "i2t", *given, "--out", str(out), "--set", "sampler.variable.steps=2"]
    result = invoke_generate(args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "i2t-0000\tred circle"
    assert loads == [("train", train, "train"), ("tokenizers", tokenizers_dir, "tokenizers")]
    assert [g.outputs for g in load_generations(out)] == [{"text": "red circle"}]
    assert (out / "grid-i2t.png").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("generate").experiment_id])
    params = tracked.data.params
    assert (tracked.info.run_name, tracked.info.status) == ("generate-i2t", "FINISHED")
    assert (params["sampler.variable.steps"], params["sampler.use"], params["candidates.i2t"]) == ("2", "maskgit", "1")
    assert (params["task"], params["task.use"], params["seed"]) == ("i2t", "i2t", "1")
    assert not any(name.startswith(("rerank", "refine")) for name in params)
    logged = sorted(a.path for a in client.list_artifacts(tracked.info.run_id, "generations"))
    assert "generations/grid-i2t.png" in logged and "generations/generations.jsonl" in logged

    quiet = ["--tracker", "none"]
    bad = invoke_generate([*args[:-2], "--set", "sampler.variable.stepz=2", *quiet])
    assert bad.exit_code == 2 and "did you mean 'steps'" in bad.output

    # The cycle reranker and caption refinement use the model: no CLIP stage is loaded.
    loads.clear()
    cycle = ["--task", "i2t", *given, "--out", str(tmp_path / "cycle"), "--candidates", "2", "--rerank", "cycle"]
    cycle += ["--refine", "caption_refine", "--set", "rerank.passes=1", *quiet]
    result = invoke_generate(cycle)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "i2t-0000\tred circle"
    assert [key for key, _, _ in loads] == ["train", "tokenizers"]
    no_pass = invoke_generate([*cycle, "--set", "rerank.passes=0"])
    assert no_pass.exit_code == 2 and no_pass.output == "error: mmgen generate: rerank.i2t.passes: must be > 0, got 0\n"
    unnamed = invoke_generate(["--task", "i2t", *given, "--set", "rerank.passes=1", *quiet])
    assert unnamed.exit_code == 2 and "--set rerank.passes=1: give --rerank NAME first" in unnamed.output
    # CLIP reranking reads a clip stage, which --stage folders must then name.
    stages = ["--stage", f"train={train}", "--stage", f"tokenizers={tokenizers_dir}"]
    no_clip = invoke_generate(
        ["--task", "t2i", "--prompt", "red", *stages, "--candidates", "2", "--rerank", "clip", *quiet]
    )
    assert no_clip.exit_code == 2 and "give --run DIR or --stage clip=DIR" in no_clip.output
    unranked = invoke_generate(["--task", "t2i", "--prompt", "red", "--candidates", "2", *stages, *quiet])
    assert unranked.exit_code == 2 and "`--rerank clip` on the command line" in unranked.output

    # A reranker the task cannot feed fails before sampling.
    model.calls.clear()
    wrong = ["--task", "inpaint", *given, "--candidates", "2", "--rerank", "cycle", *quiet]
    wrong_task = invoke_generate(wrong)
    assert wrong_task.exit_code != 0 and model.calls == []
    assert "task 'inpaint' has no ['text'] for the 'cycle' reranker" in wrong_task.output + str(wrong_task.exception)


def test_cli_region_and_count_reach_the_task(tmp_path, monkeypatch):
    pipeline, _ = fake_pipeline()
    pipeline.model.table["image"] = peaked([7] * 16, 8)
    loaded = {"train": pipeline.model, "tokenizers": pipeline.tokenizers}
    monkeypatch.setattr(StageInputs, "load", lambda self, key: loaded[key])
    run = tmp_path / "run"
    stage_folder(run, "train", "aaa", mtime=200)
    stage_folder(run, "tokenizers", "bbb", mtime=100)
    (tmp_path / "in.png").write_bytes(_png(stripes()))
    common = ["--run", str(run), "--tracker", "none"]
    out = tmp_path / "inpaint"
    args = ["--task", "inpaint", "--image", str(tmp_path / "in.png"), "--region", "0,0.5,0.5,1", "--out", str(out)]
    result = invoke_generate([*args, *common])
    assert result.exit_code == 0, result.output
    (made,) = load_generations(out)
    assert made.inputs["region"] == [0.0, 0.5, 0.5, 1.0]
    # The model draws level 7 wherever it may: the box (top right quarter) only; the stripes elsewhere.
    tokens = torch.where(box_mask((0.0, 0.5, 0.5, 1.0), (4, 4)), 7, torch.arange(16) // 2)
    decoder = tokenizers()["image"]
    expected = decoder.present(decoder.decode(Segment.full("image", tokens[None]))[0])
    assert np.array_equal(made.outputs["image"], expected)
    bad = invoke_generate([*args[:-4], "--region", "0.5,0,0.5,1", *common])
    assert bad.exit_code == 2 and "top < bottom" in bad.output
    out = tmp_path / "pairs"
    result = invoke_generate(["--task", "unconditional", "--count", "3", "--out", str(out), *common])
    assert result.exit_code == 0, result.output
    assert [g.key for g in load_generations(out)] == ["unconditional-0000", "unconditional-0001", "unconditional-0002"]
    assert [line.split("\t")[1] for line in result.output.splitlines()[:3]] == ["red circle"] * 3


# ---- stages ---------------------------------------------------------------------------------------


class FakeTracker:
    def __init__(self):
        self.metrics, self.artifacts, self.images, self.tables = {}, [], [], {}

    def log_metrics(self, metrics, *, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, path, *, artifact_path=None):
        self.artifacts.append(Path(path).name)

    def log_image(self, image, *, file_name, key=None, step=None):
        self.images.append((file_name, key, step))

    def log_table(self, data, *, file_name):
        self.tables[file_name] = {k: list(v) for k, v in data.items()}


class CountMetric:
    name = "count"

    @attrs.frozen
    class Config:
        pass

    def __init__(self, *, inputs, device):
        self.inputs, self.device = inputs, device

    @classmethod
    def from_config(cls, config, *, inputs, device):
        return cls(inputs=inputs, device=device)

    def compute(self, generations):
        return {"n": len(list(generations)), "device": 0.0 if self.device == "cpu" else 1.0}


class FakeData:
    def __init__(self, records):
        self.list, self.splits = records, []

    def records(self, split):
        self.splits.append(split)
        return self.list


class StageRegistry:
    """The plugin registry, with earlier stages whose `load` gives prepared objects, and a count metric."""

    def __init__(self, outputs):
        self.outputs, self.loads = outputs, []

    def get(self, kind, name):
        if kind == "stages" and name in self.outputs:
            outputs, loads = self.outputs, self.loads

            class Prepared:
                @classmethod
                def load(cls, folder, *, registry, device):
                    loads.append((name, folder, device))
                    return outputs[name]

            return Prepared
        if (kind, name) == ("metrics", "count"):
            return CountMetric
        return registry().get(kind, name)

    def build(self, spec, **deps):
        return self.get(spec.kind, spec.use).from_config(spec.config, **deps)


def test_generate_then_evaluate_stages(tmp_path):
    pipeline, _ = fake_pipeline()
    data = FakeData(
        [
            Record(key=f"test-{i}", modality="image", data=_png(stripes()), captions=("a red circle",), meta={"i": i})
            for i in range(3)
        ]
    )
    stages = StageRegistry({"data": data, "tokenizers": pipeline.tokenizers, "train": pipeline.model})
    config = structure_attrs(
        GenerateStage.Config,
        {"sampler": {"use": "maskgit", "fixed": {"steps": 2}}, "prompts": 2, "split": "val"},
        registry=stages,
    )
    assert [spec.use for spec in config.tasks] == ["t2i", "i2t"]  # the default tasks
    folders = {key: tmp_path / key for key in ("data", "tokenizers", "train")}
    inputs = StageInputs(folders, uses={key: key for key in folders}, registry=stages)
    tracker = FakeTracker()
    gen_dir = tmp_path / "generate"
    GenerateStage.from_config(config).run(
        StageContext(out_dir=gen_dir, inputs=inputs, registry=stages, tracker=tracker, seed=0)
    )
    assert sorted(stages.loads) == sorted((key, folder, "cpu") for key, folder in folders.items())
    assert data.splits == ["val"]
    # No protocols named: each task runs one sample per prompt only.
    (run,) = GenerateStage.load(gen_dir).values()
    generations = run.generations
    assert run.name == "one_sample" and sorted(run.timings) == ["i2t", "t2i"]
    assert [(g.task, g.key, g.reference) for g in generations] == [
        ("t2i", "test-0", {"i": 0}),
        ("t2i", "test-1", {"i": 1}),
        ("i2t", "test-0", {"i": 0}),
        ("i2t", "test-1", {"i": 1}),
    ]
    assert generations[0].inputs == {"text": "a red circle"} and generations[2].outputs == {"text": "red circle"}
    assert np.array_equal(generations[0].outputs["image"], stripes_decoded())
    assert tracker.artifacts == ["generations.jsonl", "protocols.json", "timings.json"]
    assert tracker.images == [
        ("one_sample/grid-t2i.png", "one_sample/grid-t2i", 0),
        ("one_sample/grid-i2t.png", "one_sample/grid-i2t", 0),
    ]
    # Captions of the task that writes text, against each record's own caption.
    table = {"key": ["test-0", "test-1"], "generated": ["red circle"] * 2, "reference": ["a red circle"] * 2}
    assert tracker.tables == {"one_sample/captions-i2t.json": table}
    grids = [gen_dir / "one_sample" / "grid-i2t.png", gen_dir / "one_sample" / "grid-t2i.png"]
    assert GenerateStage.summary(gen_dir) == [f"grids: {grids[0]}, {grids[1]}"]

    evaluate = EvaluateStage.from_config(structure_attrs(EvaluateStage.Config, {"metrics": ["count"]}, registry=stages))
    eval_dir = tmp_path / "evaluate"
    eval_dir.mkdir()
    eval_inputs = StageInputs({"generate": gen_dir}, uses={"generate": "generate"}, registry=stages)
    evaluate.run(StageContext(out_dir=eval_dir, inputs=eval_inputs, registry=stages, tracker=tracker, seed=0))
    written = json.loads((eval_dir / "metrics.json").read_text())
    assert written == {
        "one_sample/count/device": 0.0,
        "one_sample/count/n": 4.0,
        "one_sample/time/i2t/candidates": 1.0,
        "one_sample/time/t2i/candidates": 1.0,
    }
    seconds = json.loads((eval_dir / "timings.json").read_text())
    assert sorted(seconds) == ["one_sample/time/i2t/seconds_per_output", "one_sample/time/t2i/seconds_per_output"]
    assert tracker.metrics == {**written, **seconds}
    assert tracker.artifacts[-3:] == ["metrics.json", "timings.json", "results.md"]
    assert EvaluateStage.load(eval_dir) == written
    assert EvaluateStage.summary(eval_dir)[:2] == ["| task | value | one_sample |", "|---|---|---|"]
    assert metrics_table({"clip/t2i/score": 0.25, "clip/t2i/n": 8.0, "fid": 12.34}) == [
        "clip/t2i  n 8  score 0.250",
        "fid       fid 12.3",
    ]


def test_generate_config_checks_tasks_and_candidates():
    def config(data):
        return structure_attrs(GenerateStage.Config, data, registry=registry())

    with pytest.raises(ConfigError, match=r"tasks\[0\].use: no task named 'x2i'"):
        config({"tasks": ["x2i"]})
    with pytest.raises(ConfigError, match=r"candidates given for tasks not run: \['i2t'\]"):
        config({"tasks": ["t2i"], "candidates": {"i2t": 64}})
    with pytest.raises(ConfigError, match=r"candidates.t2i is 8, so t2i needs a reranker to pick one: .*`rerank: \{t2i: clip\}` in a recipe"):
        config({"tasks": ["t2i"], "candidates": {"t2i": 8}})
    with pytest.raises(ConfigError, match=r"refine given for tasks not run: \['i2t'\]"):
        config({"tasks": ["t2i"], "refine": {"i2t": "caption_refine"}})
    with pytest.raises(ConfigError, match=r"tasks\[1\]: .*0 <= top < bottom <= 1"):
        config({"tasks": ["t2i", {"use": "inpaint", "region": [0, 0, 0, 1]}]})
    tasks = ["t2i", {"use": "inpaint", "region": [0, 0, 0.5, 0.5]}]
    ok = config({"tasks": tasks, "candidates": {"t2i": 8}, "rerank": {"t2i": "clip"}})
    assert [spec.use for spec in ok.tasks] == ["t2i", "inpaint"] and ok.tasks[1].config.region == (0.0, 0.0, 0.5, 0.5)
    assert declared_inputs(ok) == [
        ("rerank.t2i.clip_stage", "clip"),
        ("data_stage", "data"),
        ("tokenizers_stage", "tokenizers"),
        ("model_stage", "train"),
    ]


def test_newest_finished_stage_folder(tmp_path):
    train_b = stage_folder(tmp_path, "train", "bbb", mtime=200)
    stage_folder(tmp_path, "train", "aaa", mtime=100)
    unfinished = stage_folder(tmp_path, "train", "ccc", mtime=None)
    tokenizers_dir = stage_folder(tmp_path, "tokenizers", "ddd", mtime=50)
    assert newest_finished(tmp_path, "train") == train_b
    assert newest_finished(tmp_path, "tokenizers") == tokenizers_dir
    assert read_done(train_b) == {"stage": "train", "use": "train", "hash": "bbb", "seconds": 1.0, "files": {}}
    with pytest.raises(ArtefactError, match="no finished 'clip' stage under"):
        newest_finished(tmp_path, "clip")
    with pytest.raises(ArtefactError, match="is not a finished stage folder"):
        read_done(unfinished)
