"""Stage cache keys cover the package of every component a stage builds (core/stage_key.py)."""

from __future__ import annotations

import pluggy
import pytest
from mmgen import hookspecs
from mmgen.plugins.trackers.none_tracker import NoneTracker
from mmgen.recipe import load_recipe
from mmgen.registry import Provider, Registry
from mmgen.runner import run_recipe
from mmgen.stage_key import component_packages
from mmgen.version import __version__
from registry_helpers import ToyObjective, ToySampler, ToyStage, toy_plugin

RECIPE = """
name: toy
workdir: {workdir}
tracker: {{use: none}}
stages:
  plain: {{use: toy_stage, value: 1}}
  with_objective:
    use: toy_stage
    value: 2
    reads: plain
    objectives: [{{use: toy_objective}}]
  after: {{use: toy_stage, value: 3, reads: with_objective}}
"""


def registry(*, objective_version: str) -> Registry:
    """Stages, sampler and tracker from package pkg-toys 1.0; the objective from pkg-objectives at a given version."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(toy_plugin(("stages", ToyStage), ("samplers", ToySampler), ("trackers", NoneTracker)), name="toys")
    manager.register(toy_plugin(("objectives", ToyObjective)), name="objectives")
    providers = {
        "toys": Provider(plugin="toys", package="pkg-toys", version="1.0"),
        "objectives": Provider(plugin="objectives", package="pkg-objectives", version=objective_version),
    }
    return Registry(manager, providers, [])


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(RECIPE.format(workdir=tmp_path / "runs"))
    return path


def test_the_key_names_every_package_a_stage_builds(recipe_file):
    reg = registry(objective_version="1.0")
    stages = load_recipe(recipe_file, registry=reg).stages
    assert component_packages(stages[0].spec, registry=reg) == [f"mmgen {__version__}", "pkg-toys 1.0"]
    assert component_packages(stages[1].spec, registry=reg) == [
        f"mmgen {__version__}",
        "pkg-objectives 1.0",
        "pkg-toys 1.0",
    ]


def test_an_upgraded_component_package_redoes_the_stages_that_use_it_and_what_follows(recipe_file):
    old = registry(objective_version="1.0")
    first = run_recipe(load_recipe(recipe_file, registry=old), registry=old)
    new = registry(objective_version="2.0")
    ToyStage.runs.clear()
    second = run_recipe(load_recipe(recipe_file, registry=new), registry=new)
    # The stage without the objective is reused; the one using it, and the one reading it, are redone.
    assert [r.cached for r in second] == [True, False, False]
    assert second[0].out_dir == first[0].out_dir
    assert second[1].out_dir != first[1].out_dir and second[2].out_dir != first[2].out_dir
    assert [value for value, _, _ in ToyStage.runs] == [2, 3]
    # Same versions again: everything cached.
    third = run_recipe(load_recipe(recipe_file, registry=new), registry=new)
    assert [r.cached for r in third] == [True, True, True]
