"""The recipes in recipes/ load strictly with the built-in plugins (a renamed option breaks this test, not a user's run)."""

from pathlib import Path

import pytest

from mmgen.recipe import load_recipe
from mmgen.registry import load_registry

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
PIPELINE = ["data", "tokenizers", "cache", "train", "clip", "generate", "evaluate"]


def test_the_two_shipped_recipes_are_found():
    assert [p.name for p in RECIPES] == ["quickstart.yaml", "shapes.yaml"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_loads_with_the_whole_pipeline(path):
    recipe = load_recipe(path, registry=load_registry())
    assert [entry.key for entry in recipe.stages] == PIPELINE
    train = next(entry.spec.config for entry in recipe.stages if entry.key == "train")
    assert [spec.use for spec in train.objectives][:2] == ["mask", "target_length"]
    assert train.model.use == "magvlt"
