"""The recipes in recipes/ load strictly with the built-in plugins (a renamed option breaks this test, not a user's run)."""

from pathlib import Path

import attrs
import pytest

from mmgen.recipe import load_recipe
from mmgen.registry import load_registry

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
PIPELINE = ["data", "tokenizers", "cache", "train", "clip", "generate", "evaluate"]
MAGVLT_RECIPES = [p for p in RECIPES if p.name in ("quickstart.yaml", "shapes.yaml")]


def test_the_shipped_recipes_are_found():
    assert [p.name for p in RECIPES] == [
        "compare_argvlt.yaml", "finetune_caption.yaml", "finetune_vqa.yaml", "in_context.yaml", "quickstart.yaml",
        "shapes.yaml",
    ]


def test_the_caption_finetuning_starts_from_the_shipped_models_and_measures_before_and_after(monkeypatch):
    monkeypatch.chdir(RECIPES[0].parents[1])  # its `reuse:` folders are relative to the repository
    recipe = load_recipe(RECIPES[1], registry=load_registry())
    assert [(r.key, r.use) for r in recipe.reused] == [("tokenizers", "tokenizers"), ("pretrained", "train")]
    assert [r.folder.parent for r in recipe.reused] == [
        Path("checkpoints/shapes/artefacts"),
        Path("checkpoints/shapes-first-phase/artefacts"),  # the first phase of recipes/shapes.yaml
    ]
    stages = {entry.key: entry.spec.config for entry in recipe.stages}
    assert stages["generate_before"].model_stage == "pretrained" and stages["generate"].model_stage == "finetune"
    assert stages["generate_before"].sampler == stages["generate"].sampler
    assert (stages["generate_before"].split, stages["generate"].split) == ("test", "test")


def test_the_vqa_finetuning_refits_the_text_tokenizer_and_scores_both_variants_on_test(monkeypatch):
    monkeypatch.chdir(RECIPES[0].parents[1])
    recipe = load_recipe(RECIPES[2], registry=load_registry())
    assert [(r.key, r.use) for r in recipe.reused] == [("pretrained_tokenizers", "tokenizers"), ("pretrained", "train")]
    stages = {entry.key: entry.spec.config for entry in recipe.stages}
    assert stages["tokenizers"].keep_stage == "pretrained_tokenizers"
    assert [spec.use for spec in stages["tokenizers"].tokenizers] == ["sentencepiece_bpe"]
    assert stages["finetune"].transfer_from == "pretrained_tokenizers" and stages["finetune"].answer_head.top == 64
    assert stages["finetune"].tasks["i2t"].full_length
    assert (stages["generate"].sampler.use, stages["generate_classify"].sampler.use) == ("maskgit", "answer_head")
    assert stages["generate"].split == stages["generate_classify"].split == "test"
    assert stages["evaluate_classify"].generations_stage == "generate_classify"


@pytest.mark.parametrize("path", MAGVLT_RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_loads_with_the_whole_pipeline(path):
    recipe = load_recipe(path, registry=load_registry())
    # shapes.yaml's second phase: a finetune stage between train and clip, the model generate reads.
    captions = ["captions"] if path.name == "shapes.yaml" else []
    assert [entry.key for entry in recipe.stages] == [*PIPELINE[:4], *captions, *PIPELINE[4:]]
    stages = {entry.key: entry.spec for entry in recipe.stages}
    assert stages["generate"].config.model_stage == (captions or ["train"])[0]
    if captions:
        assert stages["captions"].use == "finetune" and stages["captions"].config.pretrained_stage == "train"
    train = next(entry.spec.config for entry in recipe.stages if entry.key == "train")
    assert [spec.use for spec in train.objectives][:2] == ["mask", "target_length"]
    assert train.model.use == "magvlt"


def test_the_comparison_trains_both_twins_alike_and_evaluates_them_alike():
    recipe = load_recipe(RECIPES[0], registry=load_registry())
    stages = {entry.key: entry.spec for entry in recipe.stages}
    magvlt, argvlt = stages["magvlt"].config, stages["argvlt"].config
    assert (magvlt.model.use, argvlt.model.use) == ("magvlt", "argvlt")
    assert [s.use for s in argvlt.objectives] == ["causal_lm"]
    # The same size and the same budget: updates, batch, schedule.
    assert attrs.asdict(magvlt.model.config) == attrs.asdict(argvlt.model.config)
    assert magvlt.trainer == argvlt.trainer
    # Each sampled once and as best-of-8 by CLIP; all four evaluated by the same metrics.
    for name in ("magvlt", "argvlt"):
        assert stages[f"{name}_one"].config.model_stage == name and stages[f"{name}_clip"].config.model_stage == name
        assert dict(stages[f"{name}_clip"].config.candidates) == {"t2i": 8, "i2t": 8}
    metrics = {key: [m.use for m in spec.config.metrics] for key, spec in stages.items() if spec.use == "evaluate"}
    assert len(metrics) == 4 and all(m == ["shapes_accuracy", "clip_score", "caption", "fid"] for m in metrics.values())
