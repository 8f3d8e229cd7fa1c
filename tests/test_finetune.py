"""The `finetune` stage: a recipe's `reuse:` folders, frozen parameters, LoRA adapters, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mmgen.plugins.models.lora import LoRALinear, add_adapters, merge_adapters
from mmgen.plugins.models.saved import WEIGHTS_FILE, load_trained_model
from mmgen.plugins.stages.finetune import FinetuneStage, finetune_and_save
from mmgen.plugins.stages.train_model import read_trained_layouts
from mmgen.recipe import RecipeError, load_recipe
from mmgen.registry import load_registry
from mmgen.runner import run_recipe
from mmgen.stage import StageInputs
from mmgen.config import structure_attrs

REGISTRY = load_registry()

PRETRAIN = """\
name: pretrain
device: cpu
tracker: {use: none}
stages:
  data:
    dataset: {use: shapes, size: 32, max_objects: 1, train: 16, val: 4, test: 4, holdout: 0}
  tokenizers:
    tokenizers:
      - {use: vqgan, preset: tiny, train: {steps: 2, batch_size: 4, warmup_steps: 1}}
      - {use: sentencepiece_bpe, vocab_size: 64, max_length: 32}
  cache: {bpe_dropout: {variants: 0}}
  train:
    model: {use: magvlt, preset: tiny}
    tasks: {t2i: {context: [text], target: [image], weight: 1.0}}
    trainer: {steps: 2, batch_size: 4, warmup_steps: 1}
"""

# Constant lr (no warm-up, floor == base): a run stopped at step 2 and resumed to 4 follows one run of 4.
FINETUNE_TRAINER = {
    "steps": 4, "batch_size": 4, "lr": 1e-2, "warmup_steps": 0, "min_lr_ratio": 1.0, "checkpoint_every": 2
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrain")
    recipe_file = root / "pretrain.yaml"
    recipe_file.write_text(PRETRAIN.replace("name: pretrain", f"name: pretrain\nworkdir: {root / 'runs'}"))
    results = run_recipe(load_recipe(recipe_file, registry=REGISTRY), registry=REGISTRY)
    return {result.key: result.out_dir for result in results}


def finetune_recipe(root: Path, pretrained: dict[str, Path], finetune: dict) -> Path:
    data = {
        "name": "finetune",
        "device": "cpu",
        "workdir": str(root / "runs"),
        "tracker": {"use": "none"},
        "reuse": {"tokenizers": str(pretrained["tokenizers"]), "pretrained": str(pretrained["train"])},
        "stages": {
            "data": {"dataset": {"use": "shapes", "size": 32, "max_objects": 1, "train": 16, "val": 4, "test": 4,
                                 "holdout": 0, "seed": 5}},
            "cache": {"bpe_dropout": {"variants": 0}},
            "finetune": {"pretrained_stage": "pretrained", **finetune},
        },
    }
    path = root / "finetune.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / WEIGHTS_FILE, weights_only=True)


def test_frozen_parameters_stay_exactly_as_pretrained_and_the_rest_train(pretrained, tmp_path):
    recipe = load_recipe(
        finetune_recipe(tmp_path, pretrained, {
            "tasks": {"i2t": {"context": ["image"], "target": ["text"], "weight": 1.0}},
            "freeze": ["blocks.0.*", "*embedding*"],
            "trainer": FINETUNE_TRAINER,
        }),
        registry=REGISTRY,
    )
    results = {r.key: r for r in run_recipe(recipe, registry=REGISTRY)}
    assert results["tokenizers"].reused and results["pretrained"].reused and not results["finetune"].cached
    before, after = weights(pretrained["train"]), weights(results["finetune"].out_dir)
    assert before.keys() == after.keys()
    frozen = [k for k in before if k.startswith("blocks.0.") or "embedding" in k]
    trained = [k for k in before if k.startswith("blocks.1.")]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight"))
    # Generation may use both the pretrained layout and the new one.
    layouts = read_trained_layouts(results["finetune"].out_dir)
    assert [t.name for t in layouts.tasks] == ["t2i", "i2t"]


def test_lora_trains_only_adapters_and_saves_a_plain_model(pretrained, tmp_path):
    recipe = load_recipe(
        finetune_recipe(tmp_path, pretrained, {
            "tasks": {"t2i": {"context": ["text"], "target": ["image"], "weight": 1.0}},
            "lora": {"rank": 2, "alpha": 4.0, "targets": ["blocks.*.qkv"]},
            "trainer": FINETUNE_TRAINER,
        }),
        registry=REGISTRY,
    )
    out = {r.key: r for r in run_recipe(recipe, registry=REGISTRY)}["finetune"].out_dir
    before, after = weights(pretrained["train"]), weights(out)
    assert before.keys() == after.keys()  # adapters merged: the pretrained model's own keys
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.endswith(".qkv.weight") for k in changed)  # biases and every other layer as pretrained
    model = load_trained_model(out, REGISTRY)  # loads like any trained model
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_a_fresh_adapter_computes_what_the_layer_did_and_merges_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x = torch.randn(4, 6)
    reference = model(x)
    assert add_adapters(model, targets=["0"], rank=2, alpha=4.0) == ["0"]
    assert torch.equal(model(x), reference)  # B starts at zero
    with torch.no_grad():
        model[0].lora_b.normal_()
    adapted = model(x)
    update = model[0].lora_b @ model[0].lora_a * 2.0  # alpha / rank
    expected = model[0].base.weight + update
    assert merge_adapters(model) == 1 and isinstance(model[0], torch.nn.Linear)
    assert torch.allclose(model[0].weight, expected) and torch.allclose(model(x), adapted, atol=1e-6)


def test_finetuning_resumes_to_the_same_weights(pretrained, tmp_path):
    tokenizers = StageInputs({"t": pretrained["tokenizers"]}, uses={"t": "tokenizers"}, registry=REGISTRY).load("t")
    cache = StageInputs({"c": pretrained["cache"]}, uses={"c": "cache"}, registry=REGISTRY).load("c")

    def finetune(out_dir: Path, steps: int) -> dict[str, torch.Tensor]:
        config = structure_attrs(
            FinetuneStage.Config,
            {
                "tasks": {"t2i": {"context": ["text"], "target": ["image"]}},
                "trainer": {**FINETUNE_TRAINER, "steps": steps},
            },
            registry=REGISTRY,
        )
        dataset = cache.split("train", seed=0, tokenizers=tokenizers)
        finetune_and_save(
            config, pretrained_dir=pretrained["train"], tokenizers=tokenizers, dataset=dataset, out_dir=out_dir,
            registry=REGISTRY,
        )
        return weights(out_dir)

    whole = finetune(tmp_path / "whole", 4)
    finetune(tmp_path / "parts", 2)
    resumed = finetune(tmp_path / "parts", 4)  # picks up the step-2 checkpoint
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize(
    "finetune, message",
    [
        ({"freeze": ["block.0.*"]}, "freeze: 'block.0.*' names no parameter of the model (its parameters start with:"),
        ({"lora": {"targets": ["nothing.*"]}}, "lora.targets ['nothing.*'] name no linear layer of the model"),
    ],
)
def test_a_pattern_that_names_nothing_is_one_clear_error(pretrained, tmp_path, finetune, message):
    path = finetune_recipe(tmp_path, pretrained, {**finetune, "trainer": FINETUNE_TRAINER})
    recipe = load_recipe(path, registry=REGISTRY)
    with pytest.raises(Exception, match="finetune: ") as caught:
        run_recipe(recipe, registry=REGISTRY)
    assert message in str(caught.value)


def test_a_reuse_folder_is_checked_when_the_recipe_loads(pretrained, tmp_path):
    path = finetune_recipe(tmp_path, pretrained, {})
    data = yaml.safe_load(path.read_text())
    data["reuse"]["pretrained"] = str(tmp_path / "nowhere")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RecipeError, match=r"reuse\.pretrained: .*nowhere is not a finished stage folder"):
        load_recipe(path, registry=REGISTRY)
    data["reuse"]["pretrained"] = str(pretrained["train"])
    data["stages"]["pretrained"] = {"use": "train"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(RecipeError, match="stage 'pretrained' is also under `stages:`"):
        load_recipe(path, registry=REGISTRY)


def refitted_text_recipe(root: Path, pretrained: dict[str, Path], finetune: dict) -> Path:
    """The fine-tune recipe with its own tokenizers stage: the pretrained image tokenizer, a new text one."""
    path = finetune_recipe(root, pretrained, finetune)
    data = yaml.safe_load(path.read_text())
    data["reuse"] = {"pretrained_tokenizers": data["reuse"]["tokenizers"], "pretrained": data["reuse"]["pretrained"]}
    stages = {"data": data["stages"].pop("data")}
    stages["tokenizers"] = {
        "keep_stage": "pretrained_tokenizers",
        "tokenizers": [{"use": "sentencepiece_bpe", "vocab_size": 72, "max_length": 40}],
    }
    data["stages"] = {**stages, **data["stages"]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_refitted_text_tokenizer_needs_transfer_from_and_then_carries_the_model_over(pretrained, tmp_path):
    from mmgen.tokenizers.saved import load_saved_tokenizers

    path = refitted_text_recipe(tmp_path, pretrained, {"trainer": FINETUNE_TRAINER})
    with pytest.raises(Exception, match="finetune: the tokenizers stage is not the one the pretrained model") as caught:
        run_recipe(load_recipe(path, registry=REGISTRY), registry=REGISTRY)
    assert "(its spaces: image 32 x 16, text 64 x 32; these: image 32 x 16, text 72 x 40)" in str(caught.value)
    assert "name it in transfer_from to carry the model over to these tokenizers" in str(caught.value)

    finetune = {"trainer": FINETUNE_TRAINER, "transfer_from": "pretrained_tokenizers"}
    path = refitted_text_recipe(tmp_path, pretrained, finetune)
    results = {r.key: r.out_dir for r in run_recipe(load_recipe(path, registry=REGISTRY), registry=REGISTRY)}
    kept = load_saved_tokenizers(pretrained["tokenizers"], REGISTRY)
    made = load_saved_tokenizers(results["tokenizers"], REGISTRY)
    assert list(made) == ["image", "text"]  # the kept stage's order
    assert made["image"].content_hash() == kept["image"].content_hash()
    assert made["text"].token_space.vocab_size == 72 and made["text"].token_space.length == 40
    model = load_trained_model(results["finetune"], REGISTRY)
    assert model.token_space.spaces == (made["image"].token_space, made["text"].token_space)
    assert model.length_heads["text"].out_features == 40


def test_transfer_from_must_name_the_tokenizers_the_model_was_trained_with(pretrained, tmp_path):
    path = refitted_text_recipe(tmp_path, pretrained, {"trainer": FINETUNE_TRAINER, "transfer_from": "tokenizers"})
    with pytest.raises(Exception, match="finetune: transfer_from names tokenizers") as caught:
        run_recipe(load_recipe(path, registry=REGISTRY), registry=REGISTRY)
    assert "(image 32 x 16, text 72 x 40) that the pretrained model" in str(caught.value)
    assert "was not trained with (its spaces: image 32 x 16, text 64 x 32)" in str(caught.value)
