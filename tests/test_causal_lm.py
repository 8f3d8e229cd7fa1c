"""causal_lm: next-token loss on the task's order, checked by hand; the pair with argvlt; ARGVLT end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mmgen.api import StepInput, UserError, load_registry, structure_spec
from mmgen.cli import main
from mmgen.layout import Packed
from mmgen.objectives.causal_lm import CausalLM
from mmgen.objectives.masked_forward import CONDITION_DROPOUT_KEY
from mmgen.plugins.models.argvlt import ArgvltModel
from mmgen.plugins.models.causal import causal_attention
from mmgen.plugins.models.presets import Architecture
from mmgen.plugins.stages.train_model import build_training

from objective_helpers import (
    I2T,
    IT2IT,
    T2I,
    hand_batch,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)

SPACE = tiny_space()  # image 4x4 of 8 codes; text up to 6 of 10, 0 = end-of-text = pad; hand_batch: 3 rows


class NextTokenOracle:
    """A model whose logits at slot s pick the token at slot s + 1 (or are all zero: `uniform`)."""

    def __init__(self, *, uniform: bool = False) -> None:
        self.token_space = SPACE
        self.uniform = uniform
        self.packed: Packed | None = None

    def __call__(self, packed: Packed) -> torch.Tensor:
        self.packed = packed
        following = torch.cat([packed.tokens[:, 1:], packed.tokens[:, :1]], dim=1)  # slot s holds the id at s + 1
        return following[..., None].float()

    def logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        start, stop = SPACE.content_range(modality)
        ids = hidden[..., 0].long() - start
        logits = torch.zeros(*ids.shape, stop - start)
        if not self.uniform:
            inside = (ids >= 0) & (ids < stop - start)
            logits[inside] = 50.0 * torch.nn.functional.one_hot(ids[inside], stop - start).float()
        return logits.requires_grad_()


def step(task, *, seed: int = 0) -> StepInput:
    return StepInput(batch=hand_batch(), task=task, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("task", "order"), [(T2I, ["text", "image"]), (I2T, ["image", "text"])])
def test_the_task_gives_the_order_with_magvlts_layout_and_a_causal_mask(task, order):
    model = NextTokenOracle()
    out = CausalLM(token_space=SPACE)(model, step(task))
    packed = model.packed
    assert [s.modality for s in packed.spans] == order
    first, second = packed.spans
    assert packed.tokens[0, 0] == SPACE.special("BOC") and packed.tokens[0, second.begin - 1] == SPACE.special("BOG")
    assert packed.tokens[0, first.begin] == SPACE.begin_id(order[0])
    assert torch.equal(packed.attn_mask, causal_attention(packed.key_padding))
    assert out.metrics["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("task", "tokens"),
    [(T2I, 3 * 16), (I2T, 2 + 4 + 6), (IT2IT, 3 * 16 + 12)],  # captions of 2, 4 and 6 tokens with their EOS
)
def test_targets_are_the_next_tokens_of_the_trained_part_without_padding(task, tokens):
    # With logits that put everything on the following token the loss is ~0 and every prediction right:
    # so slot s is scored against the token at s + 1 (the BEGIN slot against token 0).
    out = CausalLM(token_space=SPACE, label_smoothing=0.0)(NextTokenOracle(), step(task))
    assert out.loss.item() < 1e-12 and out.metrics == {"accuracy": 1.0, "predicted_tokens": float(tokens)}


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (T2I, math.log(8)),
        (I2T, math.log(10)),
        (IT2IT, (48 * math.log(8) + 12 * math.log(10)) / 60),  # IT2IT trains the image context too
    ],
)
def test_the_loss_is_the_mean_cross_entropy_over_every_trained_token(task, expected):
    out = CausalLM(token_space=SPACE, label_smoothing=0.0)(NextTokenOracle(uniform=True), step(task))
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("task", "tokens"), [(I2T, 12), (IT2IT, 12)])
def test_condition_dropout_shows_the_context_as_mask_and_never_as_a_target(task, tokens):
    model = NextTokenOracle()
    inputs = step(task)
    inputs.shared[CONDITION_DROPOUT_KEY] = 1.0  # every row dropped
    out = CausalLM(token_space=SPACE, label_smoothing=0.0)(model, inputs)
    image = model.packed.span("image")
    assert (model.packed.tokens[:, image.start : image.stop] == SPACE.mask_id("image")).all()
    assert out.metrics["predicted_tokens"] == float(tokens)  # the captions only, even where IT2IT trains the context


def test_label_smoothing_is_magvlts_by_default():
    registry = load_registry()
    spec = structure_spec("objectives", {"use": "causal_lm"}, path="objectives[0]", registry=registry)
    objective = registry.build(spec, token_space=SPACE)
    assert (objective.weight, objective.label_smoothing) == (1.0, 0.1)
    # Smoothing 0.1 over V classes on a confident right answer: 0.1 (V - 1) / V * 50 nats, about 4.5.
    out = objective(NextTokenOracle(), step(I2T))
    assert out.loss.item() == pytest.approx(0.1 * 9 / 10 * 50, rel=1e-6)


def test_magvlts_network_under_the_causal_mask_computes_argvlts_loss():
    # The same weights in both classes (argvlt has no length head): the objective's mask makes them agree.
    magvlt = tiny_model(SPACE)
    argvlt = ArgvltModel(token_space=SPACE, architecture=Architecture(width=32, depth=2, heads=2))
    state = {k: v for k, v in magvlt.state_dict().items() if not k.startswith("length_heads")}
    argvlt.load_state_dict(state)
    objective = CausalLM(token_space=SPACE)
    for task in (T2I, I2T):
        a, b = (objective(model.eval(), step(task)).loss for model in (magvlt, argvlt))
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "objective", "message"),
    [
        (
            "argvlt",
            "mask",
            "train: objectives[0] 'mask' trains a model with bidirectional attention, but model 'argvlt' has causal",
        ),
        (
            "magvlt",
            "causal_lm",
            "train: objectives[0] 'causal_lm' trains a model with causal attention, but model 'magvlt' has bidirect",
        ),
    ],
)
def test_the_train_stage_refuses_objectives_of_the_other_attention(model, objective, message):
    registry = load_registry()
    spec = structure_spec("models", {"use": model, "preset": "tiny"}, path="model", registry=registry)
    objectives = [structure_spec("objectives", {"use": objective}, path="objectives[0]", registry=registry)]
    with pytest.raises(UserError) as error:
        build_training(model=spec, objectives=objectives, tasks={}, seed=0, registry=registry, tokenizers=None)
    assert str(error.value).startswith(message)


# ---- ARGVLT end to end: mmgen run, then mmgen generate --run -----------------------------------

RECIPE = """
name: argvlt-tiny
seed: 0
device: cpu
tracker: {use: none}
stages:
  data:
    dataset: {use: shapes, size: 32, max_objects: 1, object_order: reading, train: 32, val: 8, test: 4, holdout: 0}
  tokenizers:
    tokenizers:
      - {use: vqgan, preset: tiny, train: {steps: 4, batch_size: 8, warmup_steps: 1, log_every: 2, checkpoint_every: 4,
         eval_images: 4, grid_images: 4}}
      - {use: sentencepiece_bpe, vocab_size: 64, max_length: 16}
  cache: {}
  train:
    model: {use: argvlt, preset: tiny}
    objectives: [{use: causal_lm}]
    tasks: {t2i: {context: [text], target: [image]}, i2t: {context: [image], target: [text]}}
    trainer: {steps: 6, batch_size: 8, lr: 1e-3, warmup_steps: 2, log_every: 3, checkpoint_every: 6}
  generate:
    tasks: [t2i, i2t]
    prompts: 2
"""


@pytest.fixture(scope="module")
def argvlt_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("argvlt")
    recipe = folder / "argvlt.yaml"
    recipe.write_text(RECIPE)
    result = CliRunner().invoke(main, ["-q", "run", str(recipe), "--set", f"workdir={folder / 'runs'}"])
    assert result.exit_code == 0, result.output
    return folder / "runs"


def generations(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]


def test_a_tiny_argvlt_recipe_trains_and_generates_with_the_autoregressive_sampler(argvlt_run):
    (train,) = (argvlt_run / "artefacts").glob("train-*")
    assert json.loads((train / "model.json").read_text())["model"]["use"] == "argvlt"
    (generate,) = (argvlt_run / "artefacts").glob("generate-*")
    made = generations(generate / "one_sample")  # no protocols named: one sample per prompt
    assert sorted(g["task"] for g in made) == ["i2t", "i2t", "t2i", "t2i"]


def test_mmgen_generate_rebuilds_argvlt_for_t2i_and_i2t(argvlt_run, tmp_path):
    runner = CliRunner()
    t2i = runner.invoke(
        main,
        [
            "generate",
            "--run",
            str(argvlt_run),
            "--task",
            "t2i",
            "--prompt",
            "a red circle",
            "--out",
            str(tmp_path / "t2i"),
            "--tracker",
            "none",
        ],
    )
    assert t2i.exit_code == 0, t2i.output
    (picture,) = generations(tmp_path / "t2i")[0]["outputs"].values()
    image = tmp_path / "t2i" / picture["png"]
    i2t = runner.invoke(
        main,
        [
            "generate",
            "--run",
            str(argvlt_run),
            "--task",
            "i2t",
            "--image",
            str(image),
            "--out",
            str(tmp_path / "i2t"),
            "--tracker",
            "none",
        ],
    )
    assert i2t.exit_code == 0, i2t.output
    (made,) = generations(tmp_path / "i2t")
    assert made["task"] == "i2t" and isinstance(made["outputs"]["text"], str)


def test_mmgen_generate_names_a_task_argvlt_cannot_do_left_to_right(argvlt_run, tmp_path):
    image = next((argvlt_run / "artefacts").glob("generate-*/one_sample/images/t2i/*.png"))
    result = CliRunner().invoke(
        main, ["generate", "--run", str(argvlt_run), "--task", "inpaint", "--image", str(image), "--tracker", "none"]
    )
    assert result.exit_code == 2
    assert result.output == (
        "error: task 'inpaint': the autoregressive sampler generates left to right, but the 'image' target has known"
        " tokens after ones to generate (inpainting, infilling): use a MAGVLT model with the maskgit sampler\n"
    )


def test_mmgen_generate_refuses_the_maskgit_sampler_for_argvlt(argvlt_run, tmp_path):
    result = CliRunner().invoke(
        main,
        ["generate", "--run", str(argvlt_run), "--task", "t2i", "--prompt", "a red circle", "--sampler", "maskgit"]
        + ["--tracker", "none", "--out", str(tmp_path / "out")],
    )
    assert result.exit_code == 2
    assert result.output == (
        "error: task 't2i': the maskgit sampler fills masked tokens in parallel, but model 'argvlt' attends left to"
        " right: use the autoregressive sampler (the model's default)\n"
    )
