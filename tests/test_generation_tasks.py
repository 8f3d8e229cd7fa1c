"""Generation tasks end to end: request layouts, known tokens kept, reranking, outputs on disk, CLI and stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from generation_helpers import FakeModel, GridImageTokenizer, WordTokenizer, peaked, uniform_over
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.batch import Record, Segment
from mmgen.plugins.generation import artefacts as artefacts_module
from mmgen.plugins.generation.artefacts import Loaded
from mmgen.plugins.generation.cli import generate
from mmgen.plugins.generation.grid import Cell, render_grid
from mmgen.plugins.generation.prompts import command_line_prompts, half_words, prompts_from_records
from mmgen.plugins.generation.regions import box_mask, parse_box
from mmgen.plugins.generation.store import load_generations, publish
from mmgen.plugins.generation.task_names import TASK_NAMES
from mmgen.plugins.generation.tasks import TASKS, Prompt, TaskRunner, infill_span
from mmgen.plugins.generation.text_cleanup import clean_caption
from mmgen.samplers.maskgit import FixedLengthOptions, MaskGitSampler, VariableLengthOptions
from mmgen.token_space import JointTokenSpace

WORDS = ("a", "red", "blue", "circle", "square", "big", "small")
FAST = MaskGitSampler(fixed=FixedLengthOptions(steps=3), variable=VariableLengthOptions(steps=3))


def tokenizers():
    return {"image": GridImageTokenizer(grid=(4, 4), size=16, vocab=8), "text": WordTokenizer(words=WORDS, length=8)}


def joint_space(tok):
    return JointTokenSpace(spaces=(tok["image"].token_space, tok["text"].token_space))


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


def prompts(n=2, text="a big red circle"):
    return [Prompt(key=f"p{i}", text=text, image=stripes(), reference={"index": i}) for i in range(n)]


# ---- pure pieces ----------------------------------------------------------------------------------


def test_task_table_matches_the_light_name_list():
    assert tuple(TASKS) == TASK_NAMES


def test_clean_caption_cuts_at_the_first_period_and_drops_repeats():
    assert clean_caption("a red red circle. a blue square") == "a red circle"
    assert clean_caption("a a a big  big circle") == "a big circle"
    assert clean_caption("red circle red circle") == "red circle red circle"


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


def test_prompts_from_records_edit_with_the_next_caption_and_complete_half_a_caption():
    tok = tokenizers()
    png = _png(stripes())
    records = [
        Record(key=f"test-{i}", modality="image", data=png, captions=(c, "other"), meta={"i": i})
        for i, c in enumerate(["a red circle in the top", "a blue square"])
    ]
    edits = prompts_from_records("it2i", records, image_tokenizer=tok["image"])
    assert [p.text for p in edits] == ["a blue square", "a red circle in the top"]
    assert torch.equal(edits[0].image, stripes()) and edits[1].reference == {"i": 1}
    assert [p.text for p in prompts_from_records("it2t", records, image_tokenizer=tok["image"])] == [
        "a red circle",
        "a",
    ]
    assert [p.text for p in prompts_from_records("i2t", records, image_tokenizer=tok["image"])] == [None, None]
    assert half_words("one") == "one"


def test_command_line_prompts_pair_one_with_many():
    image = stripes()
    pairs = command_line_prompts("it2t", texts=["a", "a red"], images=[image])
    assert [(p.key, p.text) for p in pairs] == [("it2t-0000", "a"), ("it2t-0001", "a red")]
    assert all(p.image is image for p in pairs)
    assert len(command_line_prompts("unconditional", texts=[], images=[], count=3)) == 3
    with pytest.raises(ValueError, match="task 't2i' needs at least one text"):
        command_line_prompts("t2i", texts=[], images=[image])
    with pytest.raises(ValueError, match="2 texts and 3 images"):
        command_line_prompts("it2i", texts=["a", "b"], images=[image] * 3)


# ---- every task on a randomly initialised tiny MAGVLT --------------------------------------------


def run_on_tiny(task, *, prompt_list=None, sampler=None, seed=0):
    tok = tokenizers()
    spy = SpySampler(sampler or FAST)
    runner = TaskRunner(model=tiny_magvlt(joint_space(tok)), tokenizers=tok, sampler=spy)
    generations = runner.run(task, prompt_list or prompts(), seed=seed, batch_size=4)
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

    generations, request, result = run_on_tiny("i2t")
    assert layout(request) == [("image", False), ("text", True)]
    assert request.segments[1].lengths is None  # predicted by the length head
    for generation in generations:
        assert set(generation.outputs) == {"text"}
        assert all(word in WORDS for word in generation.outputs["text"].split())


@pytest.mark.parametrize("task, keep_inside", [("inpaint", False), ("outpaint", True), ("it2i", False)])
def test_region_tasks_keep_the_tokens_they_should(task, keep_inside):
    generations, request, result = run_on_tiny(task)
    context, image = request.segments
    inside = box_mask((0.25, 0.25, 0.75, 0.75), (4, 4)).expand(2, 16)
    assert torch.equal(image.known, inside if keep_inside else ~inside)
    assert torch.equal(result.segments[0].tokens[image.known], image.tokens[image.known])
    assert context.modality == "text" and not context.target
    assert context.known.any() == (task == "it2i")  # inpainting drops the caption: all MASK
    source = tokenizers()["image"].decode(tokenizers()["image"].encode(stripes()[None]))[0].permute(1, 2, 0).numpy()
    pixels = torch.from_numpy(generations[0].outputs["image"])
    kept = torch.from_numpy(np.kron(image.known[0].view(4, 4).numpy(), np.ones((4, 4), dtype=bool)).astype(bool))
    assert torch.equal(pixels[kept], torch.from_numpy(source)[kept])
    assert generations[0].inputs["region"] == [0.25, 0.25, 0.75, 0.75]


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
    assert (result.segments[0].lengths >= 4).all()  # the prefix, one new token, EOS
    assert all(g.outputs["text"].startswith("a") for g in generations)


@pytest.mark.parametrize("task", ["t2it", "unconditional"])
def test_pair_tasks_generate_image_then_caption(task):
    prompt_list = prompts() if task == "t2it" else [Prompt(key="u0"), Prompt(key="u1")]
    generations, request, result = run_on_tiny(task, prompt_list=prompt_list)
    assert layout(request) == [("text", False), ("image", True), ("text", True)]
    assert request.segments[0].known.any() == (task == "t2it")
    assert [s.modality for s in result.segments] == ["image", "text"]
    for generation in generations:
        assert set(generation.outputs) == {"image", "text"} and generation.outputs["image"].dtype == np.uint8


def test_same_seed_same_generations_and_another_seed_differs():
    first, _, _ = run_on_tiny("t2i", seed=3)
    again, _, _ = run_on_tiny("t2i", seed=3)
    other, _, _ = run_on_tiny("t2i", seed=4)
    assert all(np.array_equal(a.outputs["image"], b.outputs["image"]) for a, b in zip(first, again))
    assert not all(np.array_equal(a.outputs["image"], b.outputs["image"]) for a, b in zip(first, other))


# ---- exact outputs with the fake model -------------------------------------------------------------


def fake_runner(*, reranker=None, sampler=None):
    tok = tokenizers()
    space = joint_space(tok)
    # Text: "red red circle" then EOS; length head: class 3 (length 4).
    model = FakeModel(
        space,
        {"image": peaked([p // 2 for p in range(16)], 8), "text": peaked([2, 2, 4, 0, 0, 0, 0, 0], 8)},
        length_logits=torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0]),
    )
    spy = SpySampler(sampler or FAST)
    return TaskRunner(model=model, tokenizers=tok, sampler=spy, reranker=reranker), spy


def test_decoded_outputs_are_exact_and_captions_post_processed():
    runner, _ = fake_runner()
    t2i = runner.run("t2i", prompts(1))[0]
    expected = tokenizers()["image"].decode(tokenizers()["image"].encode(stripes()[None]))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(t2i.outputs["image"], expected)  # token p = p // 2: the stripes' levels
    i2t = runner.run("i2t", prompts(1))[0]
    assert i2t.outputs == {"text": "red circle"}  # "red red circle": the repeat dropped


class TokenSumReranker:
    """Scores a pair by the sum of its image tokens."""

    def __init__(self):
        self.calls = []

    def best(self, image, text, *, candidates):
        self.calls.append((image.tokens.shape[0], candidates))
        return image.tokens.sum(1).view(-1, candidates).argmax(1) + torch.arange(0, image.tokens.shape[0], candidates)


def test_candidates_are_reranked_per_prompt():
    reranker = TokenSumReranker()
    runner, spy = fake_runner(reranker=reranker, sampler=MaskGitSampler(fixed=FixedLengthOptions(steps=2)))
    runner.model.table["image"] = uniform_over([8] * 16, 8)
    generations = runner.run("t2i", prompts(3), candidates=4, batch_size=8)
    assert reranker.calls == [(8, 4), (4, 4)]  # 2 prompts x 4 rows, then the last prompt
    all_rows = torch.cat([result.segments[0].tokens for _, result in spy.seen])
    best = all_rows.view(3, 4, 16).sum(2).argmax(1)
    decoder = tokenizers()["image"]
    for prompt_index, generation in enumerate(generations):
        row = all_rows[prompt_index * 4 + best[prompt_index]]
        expected = decoder.decode(Segment.full("image", row[None]))[0]
        assert np.array_equal(generation.outputs["image"], expected.permute(1, 2, 0).numpy())


class RecordingRefiner:
    """Records what it is asked to refine; writes word `word` (a WordTokenizer id) over row r's position r."""

    def __init__(self, word):
        self.word, self.calls = word, []

    def refine(self, image, text):
        self.calls.append((image.tokens.clone(), text.tokens.clone(), text.lengths.clone()))
        tokens = text.tokens.clone()
        tokens[torch.arange(len(tokens)), torch.arange(len(tokens))] = self.word
        return Segment(modality=text.modality, tokens=tokens, lengths=text.lengths)


def test_refinement_runs_once_over_every_prompts_chosen_caption_in_prompt_order():
    runner, spy = fake_runner(reranker=TokenSumReranker())
    refiner = RecordingRefiner(word=tokenizers()["text"].encode(["blue"]).tokens[0, 0].item())
    runner.refiners = {"i2t": refiner}
    generations = runner.run("i2t", prompts(3), candidates=2, batch_size=2)  # three sampled batches of one prompt
    assert len(spy.seen) == 3 and len(refiner.calls) == 1
    images, texts, lengths = refiner.calls[0]
    assert texts.shape[0] == 3 and lengths.tolist() == [4, 4, 4]  # the chosen captions, "red red circle" + EOS
    assert torch.equal(images, tokenizers()["image"].encode(stripes()[None].expand(3, -1, -1, -1)).tokens)
    # Row r got "blue" at position r: "blue red circle", "red blue circle", "red red blue" (repeat dropped).
    assert [g.outputs["text"] for g in generations] == ["blue red circle", "red blue circle", "red blue"]
    assert [g.key for g in generations] == ["p0", "p1", "p2"]


def test_refinement_calls_hold_at_most_refine_rows_captions(monkeypatch):
    import mmgen.plugins.generation.tasks as tasks

    monkeypatch.setattr(tasks, "REFINE_ROWS", 2)
    runner, _ = fake_runner(reranker=TokenSumReranker())
    refiner = RecordingRefiner(word=tokenizers()["text"].encode(["blue"]).tokens[0, 0].item())
    runner.refiners = {"i2t": refiner}
    generations = runner.run("i2t", prompts(3), candidates=2, batch_size=2)
    assert [texts.shape[0] for _, texts, _ in refiner.calls] == [2, 1]
    # The third caption is row 0 of the second call: "blue" at position 0.
    assert [g.outputs["text"] for g in generations] == ["blue red circle", "red blue circle", "blue red circle"]


def test_candidates_need_a_reranker_unless_nothing_can_be_scored():
    runner, spy = fake_runner()
    with pytest.raises(ValueError, match="4 candidates per prompt need a reranker"):
        runner.run("t2i", prompts(1), candidates=4)
    runner.run("inpaint", prompts(2), candidates=4)
    assert spy.seen[-1][0].segments[1].tokens.shape[0] == 2  # image-only: one candidate each


def test_prompt_missing_an_input_is_rejected():
    runner, _ = fake_runner()
    with pytest.raises(ValueError, match="task 'i2t' needs a image in every prompt; prompt 'x' has none"):
        runner.run("i2t", [Prompt(key="x", text="a")])
    with pytest.raises(KeyError, match="no generation task 'x2y'"):
        runner.run("x2y", [])


# ---- outputs on disk, CLI and stages -----------------------------------------------------------------


def _png(image: torch.Tensor) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_generations_round_trip_through_disk_with_grids(tmp_path):
    runner, _ = fake_runner()
    made = runner.run("t2it", prompts(2)) + runner.run("inpaint", prompts(1))
    publish(made, tmp_path, columns=2)
    back = load_generations(tmp_path)
    assert [(g.task, g.key) for g in back] == [("t2it", "p0"), ("t2it", "p1"), ("inpaint", "p0")]
    for original, loaded in zip(made, back):
        assert loaded.outputs.keys() == original.outputs.keys() and loaded.reference == original.reference
        assert np.array_equal(loaded.outputs["image"], original.outputs["image"])
    assert back[0].outputs["text"] == "red circle" and back[2].inputs["region"] == [0.25, 0.25, 0.75, 0.75]
    line = json.loads((tmp_path / "generations.jsonl").read_text().splitlines()[2])
    assert line["inputs"]["image"] == {"png": "images/inpaint/00002-p0-input-image.png"}
    assert sorted(p.name for p in tmp_path.glob("grid-*.png")) == ["grid-inpaint.png", "grid-t2it.png"]


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


def test_cli_generates_with_loaded_artefacts(tmp_path, monkeypatch):
    runner, _ = fake_runner()
    loaded = Loaded(model=runner.model, tokenizers=runner.tokenizers)
    seen = {}

    def fake_load(**kwargs):
        seen.update(kwargs)
        return loaded

    monkeypatch.setattr(artefacts_module, "load_for_generation", fake_load)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "tok").mkdir(), (tmp_path / "model").mkdir()
    (tmp_path / "in.png").write_bytes(_png(stripes()))
    out = tmp_path / "out"
    args = [
        "--task",
        "i2t",
        "--image",
        str(tmp_path / "in.png"),
        "--tokenizers",
        str(tmp_path / "tok"),
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(out),
        "--set",
        "variable.steps=2",
        "--seed",
        "1",
    ]
    result = CliRunner().invoke(generate, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "i2t-0000\tred circle"
    assert (seen["tokenizers_dir"], seen["clip_dir"]) == (tmp_path / "tok", None)
    assert [g.outputs for g in load_generations(out)] == [{"text": "red circle"}]
    assert (out / "grid-i2t.png").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("generate").experiment_id])
    assert (run.info.run_name, run.info.status, run.data.params["variable.steps"]) == ("generate-i2t", "FINISHED", "2")
    logged = sorted(a.path for a in client.list_artifacts(run.info.run_id, "generations"))
    assert "generations/grid-i2t.png" in logged and "generations/generations.jsonl" in logged
    bad = CliRunner().invoke(generate, [*args[:-4], "--set", "variable.stepz=2", "--tracker", "none"])
    assert bad.exit_code == 2 and "did you mean 'steps'" in bad.output
    assert (run.data.params["candidates"], run.data.params["rerank"], run.data.params["refine"]) == ("1", "clip", "False")
    seen.clear()
    cycle = [*args, "--candidates", "2", "--rerank", "cycle", "--refine", "--tracker", "none"]
    result = CliRunner().invoke(generate, cycle)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "i2t-0000\tred circle" and seen["clip_dir"] is None  # no CLIP needed
    no_pass = CliRunner().invoke(generate, [*cycle, "--cycle-passes", "0"])
    assert no_pass.exit_code == 2 and "'--cycle-passes': 0 is not in the range x>=1" in no_pass.output
    wrong_task = CliRunner().invoke(generate, ["--task", "t2i", "--prompt", "red", *args[4:], "--rerank", "cycle"])
    assert wrong_task.exit_code == 2 and "--rerank cycle and --refine work on i2t captions, not t2i" in wrong_task.output


class FakeTracker:
    def __init__(self):
        self.metrics, self.artifacts, self.images = {}, [], []

    def log_metrics(self, metrics, *, step=None):
        self.metrics.update(metrics)

    def log_artifact(self, path, *, artifact_path=None):
        self.artifacts.append(Path(path).name)

    def log_image(self, image, *, file_name):
        self.images.append(file_name)


class CountMetric:
    name = "count"

    class Config:
        pass

    def __init__(self, *, device):
        self.device = device

    @classmethod
    def from_config(cls, config, *, device):
        return cls(device=device)

    def compute(self, generations):
        return {"n": len(list(generations)), "device": 0.0 if self.device == "cpu" else 1.0}


class MetricRegistry:
    def get(self, kind, name):
        assert (kind, name) == ("metrics", "count")
        return CountMetric

    def build(self, spec, **deps):
        return MaskGitSampler.from_config(spec.config)


def test_generate_then_evaluate_stages(tmp_path, monkeypatch):
    from mmgen.config import Spec
    from mmgen.plugins.generation.stages import EvaluateStage, GenerateStage
    from mmgen.stage import StageContext

    runner, _ = fake_runner()
    monkeypatch.setattr(
        artefacts_module, "load_for_generation", lambda **_: Loaded(model=runner.model, tokenizers=runner.tokenizers)
    )
    from mmgen.plugins.datasets.lmdb_store import StoreWriter

    with StoreWriter(tmp_path / "test.lmdb") as writer:  # the data stage's layout: <data>/<split>.lmdb
        for i in range(3):
            writer.add(
                Record(
                    key=f"test-{i}", modality="image", data=_png(stripes()), captions=("a red circle",), meta={"i": i}
                )
            )
    tracker = FakeTracker()
    sampler = Spec(kind="samplers", use="maskgit", config=MaskGitSampler.Config(fixed=FixedLengthOptions(steps=2)))
    stage = GenerateStage.from_config(GenerateStage.Config(sampler=sampler, tasks=("t2i", "i2t"), prompts=2))
    artefacts = {"data": tmp_path, "tokenizers": tmp_path, "train": tmp_path}
    gen_dir = tmp_path / "generate"
    stage.run(StageContext(out_dir=gen_dir, artefacts=artefacts, registry=MetricRegistry(), tracker=tracker, seed=0))
    generations = load_generations(gen_dir)
    assert [(g.task, g.key, g.reference) for g in generations] == [
        ("t2i", "test-0", {"i": 0}),
        ("t2i", "test-1", {"i": 1}),
        ("i2t", "test-0", {"i": 0}),
        ("i2t", "test-1", {"i": 1}),
    ]
    assert tracker.artifacts == ["generations.jsonl"]
    assert tracker.images == ["generations/grid-t2i.png", "generations/grid-i2t.png"]

    evaluate = EvaluateStage.from_config(
        EvaluateStage.Config(metrics=(Spec(kind="metrics", use="count", config=CountMetric.Config()),))
    )
    eval_dir = tmp_path / "evaluate"
    eval_dir.mkdir()
    evaluate.run(
        StageContext(
            out_dir=eval_dir,
            artefacts={**artefacts, "generate": gen_dir},
            registry=MetricRegistry(),
            tracker=tracker,
            seed=0,
        )
    )
    assert json.loads((eval_dir / "metrics.json").read_text()) == {"count/device": 0.0, "count/n": 4.0}
    assert tracker.metrics == {"count/n": 4.0, "count/device": 0.0}


def test_generate_config_checks_tasks_and_candidates():
    from mmgen.plugins.generation.stages import GenerateStage

    with pytest.raises(ValueError, match="no generation task 'x2i'"):
        GenerateStage.Config(tasks=("x2i",))
    with pytest.raises(ValueError, match=r"candidates given for tasks not run: \['i2t'\]"):
        GenerateStage.from_config(GenerateStage.Config(tasks=("t2i",), candidates={"i2t": 64}))


def test_run_folder_resolves_the_newest_finished_stage(tmp_path):
    import os

    from mmgen.plugins.generation.artefacts import latest_artefact

    for name, mtime in (("train-aaa", 100), ("train-bbb", 200), ("train-ccc", None), ("tokenizers-ddd", 50)):
        folder = tmp_path / "artefacts" / name
        folder.mkdir(parents=True)
        if mtime is not None:  # train-ccc is unfinished: no DONE.json
            (folder / "DONE.json").write_text("{}")
            os.utime(folder / "DONE.json", (mtime, mtime))
    assert latest_artefact(tmp_path, "train") == tmp_path / "artefacts" / "train-bbb"
    assert latest_artefact(tmp_path, "tokenizers") == tmp_path / "artefacts" / "tokenizers-ddd"
    with pytest.raises(FileNotFoundError, match="no finished 'clip' stage"):
        latest_artefact(tmp_path, "clip")
