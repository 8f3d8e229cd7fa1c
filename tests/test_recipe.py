from pathlib import Path

import pytest
from registry_helpers import ToyStage, toy_registry

from mmgen.recipe import RecipeError, apply_overrides, load_recipe
from mmgen.runner import run_recipe

REGISTRY = toy_registry()

RECIPE = """
name: toy
seed: 3
workdir: {workdir}
tracker: {{use: none}}
stages:
  first:
    use: toy_stage
    value: 1
  second:
    use: toy_stage
    value: 2
    reads: first
    sampler: {{use: toy_sampler, steps: 4}}
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(RECIPE.format(workdir=tmp_path / "runs"))
    return path


def test_load_resolves_defaults_and_overrides(recipe_file):
    recipe = load_recipe(recipe_file, registry=REGISTRY, overrides=["second.sampler.steps=16", "seed=5"])
    assert recipe.header.seed == 5
    assert [e.key for e in recipe.stages] == ["first", "second"]
    assert recipe.stages[1].spec.config.sampler.config.steps == 16
    assert recipe.stages[0].spec.config.sampler.config.steps == 10
    data = recipe.to_data()
    assert data["stages"]["second"]["sampler"]["steps"] == 16
    assert data["tracker"] == {"use": "none"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("second.sampler.steps=8.7", "stages.second.sampler.steps: expected an integer, got 8.7"),
        ("second.sampler.greedy=false_", "stages.second.sampler.greedy: expected true or false"),
        ("second.valeu=1", "stages.second.valeu: unknown option for ToyStage.Config; did you mean 'value'?"),
        ("second.use=toy_stag", "stages.second.use: no stage named 'toy_stag'; did you mean 'toy_stage'?"),
        ("tracker.use=mlfow", "tracker.use: no tracker named 'mlfow'"),
        ("seed=abc", "seed: expected an integer"),
    ],
)
def test_errors_before_any_work(recipe_file, override, message):
    ToyStage.runs.clear()
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file, registry=REGISTRY, overrides=[override])
    # The value came from the --set, so the error names it rather than the file.
    assert str(info.value).startswith(f"--set {override}: {message}")
    assert ToyStage.runs == []


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages:\n  a: [1,\n")
    with pytest.raises(RecipeError, match=r"bad.yaml:4:1: invalid YAML"):
        load_recipe(path, registry=REGISTRY)


def test_override_syntax_errors():
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(RecipeError, match="seed is 3, not a mapping"):
        apply_overrides({"seed": 3}, ["seed.x=1"])


def test_rerun_skips_done_stages_and_force_redoes(recipe_file):
    ToyStage.runs.clear()
    recipe = load_recipe(recipe_file, registry=REGISTRY)
    first = run_recipe(recipe, registry=REGISTRY)
    assert [r.cached for r in first] == [False, False]
    assert [v for v, _, _ in ToyStage.runs] == [1, 2]
    # Each stage sees the earlier stages it declares, and nothing else.
    assert ToyStage.runs[0][2] == {}
    assert ToyStage.runs[1][2] == {"first": first[0].out_dir}
    again = run_recipe(recipe, registry=REGISTRY)
    assert [r.cached for r in again] == [True, True]
    assert len(ToyStage.runs) == 2
    forced = run_recipe(recipe, registry=REGISTRY, force=True)
    assert [r.cached for r in forced] == [False, False]
    assert len(ToyStage.runs) == 4


def test_upstream_change_invalidates_downstream(recipe_file):
    ToyStage.runs.clear()
    base = run_recipe(load_recipe(recipe_file, registry=REGISTRY), registry=REGISTRY)
    changed = run_recipe(load_recipe(recipe_file, registry=REGISTRY, overrides=["first.value=7"]), registry=REGISTRY)
    assert changed[0].out_dir != base[0].out_dir
    # The second stage's own config did not change, but its input did: new folder, rerun.
    assert changed[1].out_dir != base[1].out_dir and not changed[1].cached
    assert (changed[1].out_dir / "value.txt").read_text() == "2"


def test_a_new_version_of_the_stage_package_redoes_the_stage(recipe_file):
    ToyStage.runs.clear()
    base = run_recipe(load_recipe(recipe_file, registry=REGISTRY), registry=REGISTRY)
    assert REGISTRY.entry("stages", "toy_stage").provider.version == "1.0"
    # Presets and defaults live in code: artefacts made by another release are never reused.
    upgraded_registry = toy_registry(version="1.1")
    upgraded = run_recipe(load_recipe(recipe_file, registry=upgraded_registry), registry=upgraded_registry)
    assert [r.cached for r in upgraded] == [False, False]
    assert [r.out_dir for r in upgraded] != [r.out_dir for r in base]


def test_unfinished_stage_folder_is_reused_not_trusted(recipe_file):
    ToyStage.runs.clear()
    recipe = load_recipe(recipe_file, registry=REGISTRY)
    results = run_recipe(recipe, registry=REGISTRY)
    (results[1].out_dir / "DONE.json").unlink()
    again = run_recipe(recipe, registry=REGISTRY)
    assert [r.cached for r in again] == [True, False]
    assert ToyStage.runs[-1][1] == results[1].out_dir


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path, monkeypatch):
    from mmgen.registry import load_registry

    monkeypatch.chdir(path.parents[1])  # `reuse:` folders are relative to where mmgen runs: the repository
    recipe = load_recipe(path, registry=load_registry())
    assert recipe.name == path.stem
    keys = [r.key for r in recipe.reused] + [e.key for e in recipe.stages]
    assert {"data", "tokenizers", "cache"} <= set(keys)


@pytest.mark.parametrize(
    "reads, message",
    [
        ("second", r"stages\.first\.reads: reads stage 'second', but no earlier stage is called that \(earlier: none\)"),
        ("frist", r"stages\.first\.reads: reads stage 'frist'.*earlier: none"),
    ],
)
def test_a_stage_may_read_only_earlier_stages(recipe_file, reads, message):
    # Checked when the recipe loads: before any stage runs or a tracker run opens.
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe_file, registry=REGISTRY, overrides=[f"first.reads={reads}"])


def test_a_misspelt_input_gets_a_did_you_mean(recipe_file):
    with pytest.raises(RecipeError, match=r"stages\.second\.reads: reads stage 'frist', but no earlier stage is called that; did you mean 'first'\?"):
        load_recipe(recipe_file, registry=REGISTRY, overrides=["second.reads=frist"])


def test_a_stage_is_found_by_its_plugin_name_too(recipe_file):
    ToyStage.runs.clear()
    results = run_recipe(load_recipe(recipe_file, registry=REGISTRY, overrides=["second.reads=toy_stage"]), registry=REGISTRY)
    assert ToyStage.runs[1][2] == {"toy_stage": results[0].out_dir}


def test_a_stage_reused_from_elsewhere_does_not_run_and_keys_what_follows(recipe_file, tmp_path):
    ToyStage.runs.clear()
    elsewhere = run_recipe(load_recipe(recipe_file, registry=REGISTRY, overrides=["first.value=9", f"workdir={tmp_path / 'other'}"]), registry=REGISTRY)
    recipe = load_recipe(recipe_file, registry=REGISTRY)
    results = run_recipe(recipe, registry=REGISTRY, reuse={"first": elsewhere[0].out_dir})
    assert [r.reused for r in results] == [True, False] and results[0].out_dir == elsewhere[0].out_dir
    assert ToyStage.runs[-1][2] == {"first": elsewhere[0].out_dir}  # the second stage reads the reused folder
    plain = run_recipe(recipe, registry=REGISTRY)
    assert plain[1].out_dir != results[1].out_dir  # downstream is keyed by the reused folder's own hash


def test_reuse_is_checked_before_any_work(recipe_file, tmp_path):
    from mmgen.runner import check_reuse

    recipe = load_recipe(recipe_file, registry=REGISTRY)
    with pytest.raises(RecipeError, match=r"--reuse third=.*: the recipe has no stage 'third' \(stages: first, second\)"):
        check_reuse(recipe, {"third": tmp_path})
    with pytest.raises(RecipeError, match=r"--reuse first=.*is not a finished stage folder"):
        check_reuse(recipe, {"first": tmp_path})
    (tmp_path / "DONE.json").write_text('{"stage": "first", "use": "train", "hash": "x"}')
    with pytest.raises(RecipeError, match=r"made by stage 'train', the recipe's 'first' is 'toy_stage'"):
        check_reuse(recipe, {"first": tmp_path})


QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


def test_the_recipe_seed_fills_every_unset_seed_and_so_the_stage_keys():
    from mmgen.registry import load_registry
    from mmgen.runner import stage_folders

    registry = load_registry()
    base = load_recipe(QUICKSTART, registry=registry)
    reseeded = load_recipe(QUICKSTART, registry=registry, overrides=["seed=7"])
    stages = reseeded.to_data()["stages"]
    assert (stages["tokenizers"]["seed"], stages["train"]["trainer"]["seed"], stages["generate"]["seed"]) == (7, 7, 7)
    assert stages["data"]["dataset"]["seed"] == 0  # the scenes keep their own seed
    before, after = stage_folders(base, registry=registry), stage_folders(reseeded, registry=registry)
    # A new seed redoes what it reaches (and what follows it) instead of finding the seed-0 folders done.
    assert [key for key in before if before[key] == after[key]] == ["data"]
    # A seed a stage sets itself is kept.
    own = load_recipe(QUICKSTART, registry=registry, overrides=["seed=7", "train.trainer.seed=3"])
    assert own.to_data()["stages"]["train"]["trainer"]["seed"] == 3
