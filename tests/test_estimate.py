"""`mmgen estimate`: exact parameter counts, per-tensor activation bytes, and totals against measured peaks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from memory_probe import peak_allocated

from mmgen.cli import main
from mmgen.memory_estimate import Tower, block_bytes, estimate
from mmgen.plugins.estimate.shapes import token_spaces, training_shapes
from mmgen.plugins.models.transformer_block import TransformerBlock
from mmgen.recipe import load_recipe
from mmgen.registry import load_registry
from mmgen.token_space import JointTokenSpace

SHAPES_TOKENIZERS = "[{use: vqgan, preset: shapes}, {use: sentencepiece_bpe, vocab_size: 128, max_length: 24}]"
PAPER_TOKENIZERS = "[{use: vqgan, preset: f16_16384}, {use: sentencepiece_bpe}]"
# The estimate may lie this much above the measured peak (torch's CPU allocator), and this much below it: it adds
# gradients and activations that are never all alive at once, so it errs high.
ESTIMATE_ABOVE = 0.25
ESTIMATE_BELOW = 0.05


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def write_recipe(folder: Path, *, model: str, objectives: str = "[{use: mask}]", tokenizers: str = SHAPES_TOKENIZERS,
                 trainer: str = "{steps: 2, batch_size: 16, warmup_steps: 0}", clip: bool = False) -> Path:
    path = folder / "estimate.yaml"
    text = (
        "name: estimate\ntracker: {use: none}\nstages:\n  data: {dataset: {use: shapes, size: 64, train: 100}}\n"
        f"  tokenizers: {{tokenizers: {tokenizers}}}\n  cache: {{}}\n"
        f"  train: {{model: {model}, objectives: {objectives}, trainer: {trainer}}}\n"
    )
    if clip:
        text += "  clip: {trainer: {steps: 2, batch_size: 64, warmup_steps: 0}}\n"
    path.write_text(text)
    return path


def shapes_of(path: Path, registry, device: str = "cpu"):
    return training_shapes(load_recipe(path, registry=registry), registry=registry, device=device)


@pytest.mark.parametrize(
    "model",
    ["{use: magvlt, preset: tiny}", "{use: magvlt, preset: shapes, width: 128}", "{use: argvlt, preset: shapes}"],
)
def test_parameter_counts_are_those_of_the_built_model(tmp_path, registry, model):
    path = write_recipe(tmp_path, model=model, objectives="[{use: mask}, {use: mixsel}]" if "magvlt" in model else
                        "[{use: causal_lm}]")
    shape = shapes_of(path, registry)[0]
    recipe = load_recipe(path, registry=registry)
    config = recipe.stages[3].spec.config
    extra = ("BOG_LEFT", "BOG_RIGHT", "BOG_TOP", "BOG_BOTTOM") if "magvlt" in model else ()
    space = JointTokenSpace(spaces=token_spaces(recipe.stages[:3], "tokenizers", "train"), extra_specials=extra)
    built = registry.build(config.model, token_space=space)
    assert shape.parameters == shape.trainable == sum(p.numel() for p in built.parameters())
    blocks = [sum(p.numel() for p in block.parameters()) for block in built.blocks]
    assert shape.unit_parameters == max(blocks)
    assert shape.root_parameters == shape.parameters - sum(blocks)


def test_base_with_the_papers_tokenizers_has_the_papers_parameter_count(tmp_path, registry):
    path = write_recipe(tmp_path, model="{use: magvlt, preset: base}", tokenizers=PAPER_TOKENIZERS,
                        objectives="[{use: mask}, {use: target_length}, {use: unroll_mask}, {use: mixsel}]")
    (shape,) = shapes_of(path, registry, device="cuda")
    assert shape.parameters == 371_533_056  # plugins/models/presets.py: the paper's 371.5M
    assert shape.unit_parameters == 12 * 1024**2 + 13 * 1024
    assert shape.towers[0].sequence == 256 + 64 + 4
    assert shape.towers[0].rows == 4.0  # the shared masked pass, target_length, unroll_mask, mixsel
    assert shape.precision == "bf16"


def test_clip_parameter_count(tmp_path, registry):
    from mmgen.plugins.clip.model import ClipModel, ClipSizes

    path = write_recipe(tmp_path, model="{use: magvlt, preset: tiny}", clip=True)
    clip = shapes_of(path, registry)[1]
    sizes = ClipSizes(image_vocab=512, image_length=64, text_vocab=128, text_length=24)
    assert clip.stage == "clip"
    assert clip.parameters == sum(p.numel() for p in ClipModel(sizes).parameters())
    assert [t.sequence for t in clip.towers] == [65, 25]
    assert not clip.can_checkpoint  # the trainer ignores activation_checkpointing for it


@pytest.mark.parametrize("dropout, masked", [(0.0, False), (0.0, True), (0.1, True)])
def test_block_bytes_are_what_autograd_saves_on_cpu(dropout, masked):
    batch, sequence, width, heads = 2, 40, 64, 4
    torch.manual_seed(0)
    block = TransformerBlock(width=width, heads=heads, dropout=dropout).train()
    weights = {p.untyped_storage().data_ptr() for p in block.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.randn(batch, sequence, width, requires_grad=True)
    mask = torch.ones(batch, 1, sequence, sequence, dtype=torch.bool) if masked else None
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        block(x, mask)
    tower = Tower(depth=1, width=width, heads=heads, mlp_ratio=4, sequence=sequence, dropout=dropout, masked=masked)
    assert sum(saved.values()) == batch * block_bytes(tower, precision="fp32", device="cpu")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_is_close_to_the_measured_peak_on_cpu(tmp_path, registry, checkpointing):
    path = write_recipe(tmp_path, model="{use: magvlt, preset: shapes}")
    (shape,) = shapes_of(path, registry)
    estimated = estimate(shape, strategy="single", devices=1, checkpointing=checkpointing, device="cpu").total
    measured = peak_allocated(path, registry=registry, checkpointing=checkpointing, trace=tmp_path / "trace.json")
    assert measured * (1 - ESTIMATE_BELOW) <= estimated <= measured * (1 + ESTIMATE_ABOVE), (estimated, measured)


def test_fsdp_shards_parameters_gradients_and_adamw(tmp_path, registry):
    trainer = "{steps: 2, batch_size: 32, warmup_steps: 0}"
    path = write_recipe(tmp_path, model="{use: magvlt, preset: shapes}", trainer=trainer)
    (shape,) = shapes_of(path, registry, device="cuda")
    single = estimate(shape, strategy="single", devices=1, checkpointing=False)
    fsdp = estimate(shape, strategy="fsdp", devices=8, checkpointing=False)
    ddp = estimate(shape, strategy="ddp", devices=8, checkpointing=False)
    assert (single.micro_batch, ddp.micro_batch, fsdp.micro_batch) == (32, 4, 4)
    assert fsdp.parameters == math.ceil(4 * shape.parameters / 8)
    assert fsdp.optimizer == math.ceil(8 * shape.parameters / 8)
    assert fsdp.communication == 4 * (2 * shape.root_parameters + 3 * shape.unit_parameters)
    assert ddp.parameters == single.parameters and ddp.activations == fsdp.activations
    assert ddp.activations < single.activations


def test_the_command_prints_a_table_per_trainable_stage_and_json(tmp_path):
    path = write_recipe(tmp_path, model="{use: magvlt, preset: shapes}", clip=True)
    result = CliRunner().invoke(main, ["estimate", str(path), "--devices", "4"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "train: magvlt shapes (width 256, depth 4, heads 4); cuda, bf16 autocast"
    assert [line.split()[:2] for line in lines if line.startswith(("  1 device", "  DDP", "  FSDP2"))] == [
        ["1", "device"], ["1", "device"], ["DDP", "4"], ["DDP", "4"], ["FSDP2", "4"], ["FSDP2", "4"],  # train
        ["1", "device"], ["DDP", "4"], ["FSDP2", "4"],  # clip: no activation checkpointing
    ]
    data = json.loads(CliRunner().invoke(main, ["estimate", str(path), "--devices", "4", "--json"]).output)
    assert [d["stage"] for d in data] == ["train", "clip"]
    assert all(row["total"] == sum(row[k] for k in ("parameters", "gradients", "optimizer", "communication",
                                                     "activations")) for d in data for row in d["rows"])


def test_a_recipe_without_a_trainable_stage_is_one_line(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("name: d\ntracker: {use: none}\nstages:\n  data: {dataset: {use: shapes, size: 64, train: 10}}\n")
    result = CliRunner().invoke(main, ["estimate", str(path)])
    assert result.exit_code == 2
    assert result.output == f"error: estimate: {path} has no trainable stage (train, clip); its stages: data\n"


def test_an_unknown_preset_is_one_line(tmp_path):
    path = write_recipe(tmp_path, model="{use: magvlt, preset: huge}")
    result = CliRunner().invoke(main, ["estimate", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"error: {path}: stages.train.model.preset:")
    assert "huge" in result.output


def test_a_batch_the_devices_do_not_divide_is_one_line(tmp_path):
    path = write_recipe(tmp_path, model="{use: magvlt, preset: tiny}")
    result = CliRunner().invoke(main, ["estimate", str(path), "--devices", "3"])
    assert result.exit_code == 2
    assert result.output == "error: estimate: train: batch_size 16 is not divisible by 3 device(s) x grad_accum 1\n"
