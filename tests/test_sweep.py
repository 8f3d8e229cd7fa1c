"""Sweeps (issue 20): expansion, validation before any work, a real tiny sweep with its compare table, a failing
variant, resume after a killed sweep, parallel variants in worker processes and on Ray.

The sweeps that run share one workdir and one MLflow store (the module's `store`): their variants differ in
the train stage at most, so the data, tokenizer and cache stages run once, and the later tests' variants
repeat the first sweep's stages, found done by their content hashes. Each sweep has its own name (its own
state folder, parent run and experiment).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mmgen import stage_folder, sweep_runner
from mmgen.cli import main
from mmgen.recipe import RecipeError, load_recipe
from mmgen.registry import load_registry
from mmgen.runner import stage_folders
from mmgen.sweep import load_sweep, structure_sweep
from sweep_helpers import (
    MASK,
    OBJECTIVES,
    SEED_KEYS,
    WITH_LENGTH,
    children,
    parent_run,
    record,
    record_file,
    state,
    store_uri,
    tiny_recipe,
    write_sweep,
)

I2T = "evaluate/one_sample/shapes_accuracy/i2t/accuracy"
# The first sweep: 2 variants x 2 seeds. Later sweeps repeat its variants to find their stages done.
ABLATION = {
    "variants": {"mask_only": {OBJECTIVES: MASK}, "with_length": {OBJECTIVES: WITH_LENGTH}},
    "seeds": {"values": [0, 1], "keys": SEED_KEYS},
}
# ablation's mask_only/seed=0 as one variant: every stage of it is done once ablation ran.
MASK_SEED_0 = {OBJECTIVES: MASK, "stages.train.trainer.seed": 0, "stages.generate.seed": 0}
KILL_WAIT_S = 300  # the subprocess imports torch and MLflow and runs a variant first: generous on a busy machine


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The shared workdir (runs/) and MLflow store (mlflow.db) of the sweeps that run; resolved, as the sweep
    resolves its workdir, so that paths in its records and logs compare equal to paths made here."""
    return tmp_path_factory.mktemp("sweeps").resolve()


def run_cli(*args: str) -> object:
    return CliRunner().invoke(main, [*args], catch_exceptions=False)


# --- expansion ---------------------------------------------------------------------------------------------


def test_variants_are_named_grouped_seeded_and_ordered_variants_then_grid_then_seeds(tmp_path, registry):
    data = tiny_recipe("order", root=tmp_path)
    data["sweep"] = {
        "variants": {"mask_only": {OBJECTIVES: MASK}, "as_written": {}},
        "grid": {"stages.train.trainer.lr": [0.001, 0.002]},
        "seeds": {"values": [3, 1], "keys": SEED_KEYS},
    }
    sweep = structure_sweep(data, registry=registry)

    assert [v.name for v in sweep.variants] == [
        "mask_only/lr=0.001/seed=3",
        "mask_only/lr=0.001/seed=1",
        "mask_only/lr=0.002/seed=3",
        "mask_only/lr=0.002/seed=1",
        "as_written/lr=0.001/seed=3",
        "as_written/lr=0.001/seed=1",
        "as_written/lr=0.002/seed=3",
        "as_written/lr=0.002/seed=1",
    ]
    assert [v.group for v in sweep.variants] == [
        "mask_only/lr=0.001",
        "mask_only/lr=0.001",
        "mask_only/lr=0.002",
        "mask_only/lr=0.002",
        "as_written/lr=0.001",
        "as_written/lr=0.001",
        "as_written/lr=0.002",
        "as_written/lr=0.002",
    ]
    assert [v.seed for v in sweep.variants] == [3, 1, 3, 1, 3, 1, 3, 1]
    assert sweep.keys == (OBJECTIVES, "stages.train.trainer.lr", *SEED_KEYS)
    assert sweep.name == "order"
    assert "sweep" not in sweep.base.to_data()

    first, last = sweep.variants[0], sweep.variants[-1]
    assert first.tags() == {
        "mmgen.sweep": "variant",
        "mmgen.variant": "mask_only/lr=0.001",
        "mmgen.variant.name": "mask_only/lr=0.001/seed=3",
        "mmgen.seed": "3",
        "mmgen.sweep.key.stages.train.objectives": '[{"use": "mask"}]',
        "mmgen.sweep.key.stages.train.trainer.lr": "0.001",
        "mmgen.sweep.key.stages.train.trainer.seed": "3",
        "mmgen.sweep.key.stages.generate.seed": "3",
    }
    # Each variant is a whole recipe with its values set; the recipe as written keeps its own objectives.
    train = first.recipe.to_data()["stages"]["train"]
    assert ([o["use"] for o in train["objectives"]], train["trainer"]["lr"], train["trainer"]["seed"]) == (
        ["mask"],
        0.001,
        3,
    )
    assert first.recipe.to_data()["stages"]["generate"]["seed"] == 3
    train = last.recipe.to_data()["stages"]["train"]
    assert (train["objectives"], train["trainer"]["lr"], train["trainer"]["seed"]) == (
        sweep.base.to_data()["stages"]["train"]["objectives"],
        0.002,
        1,
    )
    # It leaves the objectives alone: its tag says which ones it trained with (the recipe's).
    assert last.tags()["mmgen.sweep.key.stages.train.objectives"] == json.dumps(train["objectives"])


def test_grid_points_are_named_by_the_last_part_of_their_keys_unless_two_end_alike(tmp_path, registry):
    data = tiny_recipe("names", root=tmp_path)
    data["sweep"] = {
        "grid": {
            "stages.generate.sampler.fixed.steps": [2, 3],
            "stages.generate.sampler.variable.steps": [4],
            "stages.generate.split": ["val"],
            OBJECTIVES: [MASK],
        }
    }
    sweep = structure_sweep(data, registry=registry)

    # Both sampler keys end in `steps`: shown whole. Values as compact JSON, strings as they are.
    rest = 'stages.generate.sampler.variable.steps=4/split=val/objectives=[{"use":"mask"}]'
    assert [v.name for v in sweep.variants] == [
        f"stages.generate.sampler.fixed.steps=2/{rest}",
        f"stages.generate.sampler.fixed.steps=3/{rest}",
    ]
    # No seed axis: each variant is its own group, its seed tag empty.
    assert [v.group for v in sweep.variants] == [v.name for v in sweep.variants]
    assert [v.seed for v in sweep.variants] == [None, None]
    assert sweep.variants[1].tags()["mmgen.seed"] == ""
    assert sweep.variants[1].tags()["mmgen.sweep.key.stages.generate.split"] == '"val"'


def test_seeds_alone_repeat_the_recipe_as_written(tmp_path, registry):
    data = tiny_recipe("seeds", root=tmp_path)
    data["sweep"] = {"seeds": {"values": [5, 6], "keys": ["seed", "stages.train.trainer.seed"]}}
    sweep = structure_sweep(data, registry=registry)

    assert [(v.name, v.group, v.seed) for v in sweep.variants] == [
        ("recipe/seed=5", "recipe", 5),
        ("recipe/seed=6", "recipe", 6),
    ]
    assert [v.recipe.header.seed for v in sweep.variants] == [5, 6]
    assert [v.recipe.to_data()["stages"]["train"]["trainer"]["seed"] for v in sweep.variants] == [5, 6]


def test_a_variant_is_tagged_with_every_varied_key_also_those_it_leaves_alone(tmp_path, registry):
    data = tiny_recipe("shown", root=tmp_path)
    data["sweep"] = {"variants": {"mask_only": {OBJECTIVES: MASK}, "three_steps": {"stages.train.trainer.steps": 3}}}
    sweep = structure_sweep(data, registry=registry)

    mask_only, three_steps = (v.tags() for v in sweep.variants)
    # The recipe writes 2 steps; it writes no objectives, so the table shows the train stage's default ones.
    default_objectives = sweep.base.to_data()["stages"]["train"]["objectives"]
    assert (mask_only["mmgen.sweep.key.stages.train.trainer.steps"], mask_only[f"mmgen.sweep.key.{OBJECTIVES}"]) == (
        "2",
        '[{"use": "mask"}]',
    )
    assert (three_steps["mmgen.sweep.key.stages.train.trainer.steps"], three_steps[f"mmgen.sweep.key.{OBJECTIVES}"]) == (
        "3",
        json.dumps(default_objectives),
    )
    assert [o["use"] for o in default_objectives] == ["mask", "target_length", "unroll_mask", "mixsel"]


def test_set_overrides_reach_every_variant_but_a_variants_own_value_wins(tmp_path, registry):
    sweep = {"variants": {"own_lr": {"stages.train.trainer.lr": 0.004}, "as_written": {}}}
    path = write_sweep(tmp_path, "overrides", sweep)

    loaded = load_sweep(path, registry=registry, overrides=["stages.train.trainer.lr=0.005", "train.trainer.steps=3"])

    trainers = [v.recipe.to_data()["stages"]["train"]["trainer"] for v in loaded.variants]
    assert [(t["lr"], t["steps"]) for t in trainers] == [(0.004, 3), (0.005, 3)]


def test_dry_run_lists_every_variant_and_the_stage_folders_and_runs_nothing(tmp_path, registry):
    path = write_sweep(tmp_path, "tiny", ABLATION)
    folder = sweep_runner.state_dir(load_sweep(path, registry=registry))

    result = run_cli("run", str(path), "--dry-run")

    assert result.exit_code == 0, result.output
    mask = f'{OBJECTIVES}=[{{"use":"mask"}}]'
    length = f'{OBJECTIVES}=[{{"use":"mask"}},{{"use":"target_length","weigh...'  # values past 48 characters are cut
    seeds = [f"stages.train.trainer.seed={seed}, stages.generate.seed={seed}" for seed in (0, 1)]
    shared = "data 1, tokenizers 1, cache 1, train 4, generate 4, evaluate 4"
    assert result.output.splitlines() == [
        f"sweep tiny: 4 variants ({folder})",
        f"  mask_only/seed=0             not run   {mask}, {seeds[0]}",
        f"  mask_only/seed=1             not run   {mask}, {seeds[1]}",
        f"  with_length/seed=0           not run   {length}, {seeds[0]}",
        f"  with_length/seed=1           not run   {length}, {seeds[1]}",
        f"stage folders across the variants (1: shared by all): {shared}",
    ]
    assert folder == tmp_path / "runs" / "sweeps" / f"tiny-{load_sweep(path, registry=registry).digest()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no runs/, no mlflow.db


# --- validation: one line, exit status 2, nothing run -----------------------------------------------------


def broken(change: dict) -> dict:
    """ABLATION's sweep section with `change` to its options."""
    return {**copy.deepcopy(ABLATION), **change}


TRAINER_OPTIONS = (
    "steps, batch_size, lr, betas, weight_decay, warmup_steps, min_lr_ratio, grad_clip, grad_accum, ema_decay, "
    "precision, compile, activation_checkpointing, checkpoint_every, keep_last, log_every, distributed, num_workers, "
    "seed"
)
OBJECTIVE_NAMES = "causal_lm, in_context_mask, mask, mixsel, target_length, unroll_mask, vqa_classify"
HEADS = "(keys: name, description, seed, device, workdir, tracker, reuse, stages)"
OWN_SEEDS = {"stages.tokenizers.seed": 0, "stages.train.trainer.seed": 0, "stages.generate.seed": 0}
FIXED = "every variant shares the sweep's name, workdir, tracker"
# case -> (the sweep section, the error after `<recipe path>: `)
BAD_SWEEPS = {
    "mistyped option in a variant": (
        broken({"variants": {"mask_only": {OBJECTIVES: MASK, "stages.train.trainer.stepz": 3}}}),
        "sweep.variants.mask_only.stages.train.trainer.stepz: stages.train.trainer.stepz: unknown option for "
        f"TrainerConfig; did you mean 'steps'? (options: {TRAINER_OPTIONS}) (variant mask_only/seed=0)",
    ),
    "bad grid value": (
        broken({"grid": {"stages.train.trainer.lr": [0.001, "fast"]}}),
        "sweep.grid.stages.train.trainer.lr: stages.train.trainer.lr: expected a number, got 'fast' (str) "
        "(variant mask_only/lr=fast/seed=0)",
    ),
    "unknown plugin in a variant": (
        broken({"variants": {"typo": {OBJECTIVES: [{"use": "maks"}]}}}),
        f"sweep.variants.typo.{OBJECTIVES}: {OBJECTIVES}[0].use: no objective named 'maks'; did you mean 'mask'? "
        f"(registered: {OBJECTIVE_NAMES}) (variant typo/seed=0)",
    ),
    "key not starting with a recipe key": (
        broken({"grid": {"train.trainer.lr": [0.001]}}),
        f"sweep.grid.train.trainer.lr: 'train.trainer.lr' does not start with a recipe key {HEADS}",
    ),
    "key misspelling a recipe key": (
        broken({"variants": {"a": {"stagse.train.trainer.lr": 0.001}}}),
        "sweep.variants.a.stagse.train.trainer.lr: 'stagse.train.trainer.lr' does not start with a recipe key; "
        f"did you mean 'stages'? {HEADS}",
    ),
    "varying workdir": (
        broken({"variants": {"a": {"workdir": "elsewhere"}}}),
        f"sweep.variants.a.workdir: a sweep cannot vary 'workdir': {FIXED}",
    ),
    "varying the tracker": (
        broken({"grid": {"tracker.experiment": ["a", "b"]}}),
        f"sweep.grid.tracker.experiment: a sweep cannot vary 'tracker': {FIXED}",
    ),
    "varying the name": (
        broken({"variants": {"a": {"name": "other"}}}),
        f"sweep.variants.a.name: a sweep cannot vary 'name': {FIXED}",
    ),
    "a whole stage": (
        broken({"variants": {"a": {"stages.train": {}}}}),
        "sweep.variants.a.stages.train: 'stages.train': vary a stage's options (stages.<stage>.<option>), "
        "not a whole stage",
    ),
    "seeds without keys": (
        broken({"seeds": {"values": [0, 1]}}),
        "sweep.seeds.keys: name the recipe keys one seed sets: [stages.train.trainer.seed, stages.generate.seed] "
        "trains and samples anew on shared tokenizers; [seed] sets every seed a stage leaves unset",
    ),
    "repeated seeds": (
        broken({"seeds": {"values": [0, 1, 0], "keys": SEED_KEYS}}),
        "sweep.seeds.values: seeds repeat: [0, 1, 0]",
    ),
    "a seed that is not an integer": (
        broken({"seeds": {"values": [0, "1"], "keys": SEED_KEYS}}),
        "sweep.seeds.values: expected a non-empty list of integers, got [0, '1'] (list)",
    ),
    "unknown sweep option": (
        broken({"seed": {"values": [0]}}),
        "sweep.seed: unknown sweep option; did you mean 'seeds'? (options: variants, grid, seeds, compare)",
    ),
    "a key set by a variant and the grid": (
        broken({"grid": {OBJECTIVES: [MASK]}}),
        f"sweep.grid.{OBJECTIVES}: '{OBJECTIVES}' is also set by sweep.variants.mask_only.{OBJECTIVES}: "
        "one place per key",
    ),
    "a key set by a variant and the seeds": (
        broken({"variants": {"a": {"stages.generate.seed": 4}}}),
        "sweep.seeds.keys: 'stages.generate.seed' is also set by sweep.variants.a.stages.generate.seed: "
        "one place per key",
    ),
    "a variant name that is no folder name": (
        broken({"variants": {"a/b": {}}}),
        "sweep.variants.a/b: a variant name is letters, digits and _ . + - (it names a run and a folder)",
    ),
    # Every stage here sets its own seed, so the recipe's reaches none: each seed would find every stage done.
    "seeds over the recipe's seed where every stage has its own": (
        broken(
            {"variants": {"mask_only": {OBJECTIVES: MASK, **OWN_SEEDS}}, "seeds": {"values": [0, 1], "keys": ["seed"]}}
        ),
        "sweep.seeds.keys: variants mask_only/seed=0 and mask_only/seed=1 run the same stages, so the second would "
        "only repeat the first's results: what sets them apart is no stage's option (the recipe's `seed` reaches only "
        "seeds left unset): set stage seeds (stages.train.trainer.seed, ...)",
    ),
    "variants differing in no stage option": (
        broken({"variants": {"a": {}, "b": {"description": "the same stages"}}}),
        "sweep: variants a/seed=0 and b/seed=0 run the same stages, so the second would only repeat the first's "
        "results: what sets them apart is no stage's option: vary stage options (stages.<stage>.<option>)",
    ),
    "an empty sweep": ({}, "sweep: expected a mapping with variants, grid, seeds, compare, got {} (dict)"),
    "a comparison and nothing to vary": ({"compare": {}}, "sweep: name what varies: variants, grid or seeds"),
    "a comparison with a misspelt option": (
        broken({"compare": {"metric": ["evaluate/*"]}}),
        "sweep.compare: expected {metrics: [metric globs], curve: metric}, got {'metric': ['evaluate/*']} (dict)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SWEEPS))
def test_a_bad_sweep_is_one_line_blamed_on_its_yaml_path_before_any_work(tmp_path, case):
    sweep, message = BAD_SWEEPS[case]
    path = write_sweep(tmp_path, "bad", sweep)

    result = run_cli("run", str(path))

    assert (result.exit_code, result.output) == (2, f"error: {path}: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no runs/, no mlflow.db


def test_a_sweep_recipe_is_not_a_plain_recipe(tmp_path, registry):
    path = write_sweep(tmp_path, "plain", ABLATION)

    with pytest.raises(RecipeError) as caught:
        load_recipe(path, registry=registry)

    assert str(caught.value) == (
        f"{path}: sweep: a sweep recipe: run it with `mmgen run` (docs/sweeps.md), one variant at a time elsewhere"
    )


def test_reuse_and_force_are_refused_for_a_sweep(tmp_path):
    path = write_sweep(tmp_path, "refused", ABLATION)

    result = run_cli("run", str(path), "--force")

    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: --reuse and --force are for one recipe, not a sweep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refused.yaml"]


# --- running sweeps ----------------------------------------------------------------------------------------


def test_a_sweep_runs_each_variant_as_a_child_run_sharing_stages_and_compares_them(store, registry, tmp_path):
    path = write_sweep(store, "ablation", ABLATION)
    folder = sweep_runner.state_dir(load_sweep(path, registry=registry))

    result = run_cli("run", str(path))

    assert result.exit_code == 0, result.output
    names = ["mask_only/seed=0", "mask_only/seed=1", "with_length/seed=0", "with_length/seed=1"]
    parent_id = state(folder)["parent_run_id"]
    assert state(folder) == {"parent_run_id": parent_id, "variants": names}
    assert "4 of 4 variants finished" in result.output.splitlines()
    assert result.output.splitlines()[-1].startswith(f"MLflow run {parent_id} in experiment 'ablation': open it with")

    parent = parent_run(store, parent_id)
    assert (parent.info.status, parent.info.run_name) == ("FINISHED", "ablation")
    assert {k: v for k, v in parent.data.tags.items() if k.startswith("mmgen.")} == {
        "mmgen.recipe": "ablation",
        "mmgen.sweep": "parent",
        "mmgen.sweep.keys": json.dumps([OBJECTIVES, *SEED_KEYS]),
    }
    assert parent.data.metrics == {"sweep/finished": 4.0, "sweep/failed": 0.0}

    runs = children(store, parent_id)
    assert sorted(runs) == names
    for name, run in runs.items():
        group, seed = name.split("/seed=")
        objectives = MASK if group == "mask_only" else WITH_LENGTH
        assert (run.info.status, run.info.run_name, run.info.experiment_id) == (
            "FINISHED",
            name,
            parent.info.experiment_id,
        )
        assert {k: v for k, v in run.data.tags.items() if k.startswith(("mmgen.", "mlflow.parentRunId"))} == {
            "mlflow.parentRunId": parent_id,
            "mmgen.sweep": "variant",
            "mmgen.variant": group,
            "mmgen.variant.name": name,
            "mmgen.seed": seed,
            f"mmgen.sweep.key.{OBJECTIVES}": json.dumps(objectives),
            "mmgen.sweep.key.stages.train.trainer.seed": seed,
            "mmgen.sweep.key.stages.generate.seed": seed,
        }
        assert record(folder, name)["status"] == "FINISHED"
        assert record(folder, name)["run_id"] == run.info.run_id
        assert I2T in run.data.metrics

    # Shared by content hash: one data, tokenizer and cache folder for all four; a train folder each.
    stages = [record(folder, name)["stages"] for name in names]
    assert {key: len({s[key] for s in stages}) for key in stages[0]} == {
        "data": 1,
        "tokenizers": 1,
        "cache": 1,
        "train": 4,
        "generate": 4,
        "evaluate": 4,
    }
    built = sorted(p.name.split("-")[0] for p in (store / "runs" / "artefacts").iterdir() if not p.name.startswith("."))
    assert [built.count(key) for key in ("data", "tokenizers", "cache", "train")] == [1, 1, 1, 4]

    # A finished sweep's --dry-run says so.
    listing = run_cli("run", str(path), "--dry-run").output.splitlines()
    assert [line.split()[:2] for line in listing[1:5]] == [[name, "FINISHED"] for name in names]

    # mmgen compare: each variant's n = 2 seeds, its values those of its children's runs.
    out = tmp_path / "compare"
    compared = run_cli("compare", "ablation", "--tracking-uri", store_uri(store), "--out", str(out))
    assert compared.exit_code == 0, compared.output
    assert compared.output.splitlines()[0] == f"sweep {parent_id} in experiment 'ablation': 4 runs"
    rows = list(csv.reader((out / "compare.csv").open()))
    assert rows[0] == ["variant", OBJECTIVES, "metric", "mean", "std", "n", "failed", "values"]
    metrics = sorted(
        set.intersection(*(set(run.data.metrics) for run in runs.values()))
        - {key for key in runs[names[0]].data.metrics if not key.startswith("evaluate/") or key.endswith("/seconds")}
    )
    assert I2T in metrics
    expected = []
    for group, objectives in (("mask_only", MASK), ("with_length", WITH_LENGTH)):
        for metric in metrics:
            values = {seed: runs[f"{group}/seed={seed}"].data.metrics[metric] for seed in ("0", "1")}
            mean, std = statistics.fmean(values.values()), statistics.stdev(values.values())
            expected.append(
                [group, json.dumps(objectives), metric, repr(mean), repr(std), "2", "0", json.dumps(values)]
            )
    assert rows[1:] == expected


def test_a_failing_variant_is_recorded_the_others_finish_and_a_rerun_retries_only_it(store, registry, caplog):
    sweep = {"variants": {"ok": MASK_SEED_0, "bad_split": {**MASK_SEED_0, "stages.generate.split": "holdout"}}}
    path = write_sweep(store, "failing", sweep)
    folder = sweep_runner.state_dir(load_sweep(path, registry=registry))

    result = run_cli("run", str(path))

    assert result.exit_code == 1, result.output
    ok, bad = record(folder, "ok"), record(folder, "bad_split")
    # A user error is recorded as its one line (no exception type, as the command line prints it).
    error = (
        f"the data stage wrote no 'holdout' split ({ok['stages']['data']}/holdout.lmdb is missing;"
        " it has ['test', 'train', 'val'])"
    )
    assert (ok["status"], bad["status"], bad["error"]) == ("FINISHED", "FAILED", error)
    assert "stages" not in bad
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("bad_split "))
    assert (lines[at].split()[1], lines[at + 1].strip()) == ("FAILED", f"error: {error}")
    assert "1 of 2 variants finished, 1 failed: run the same command again to retry them" in lines
    parent_id = state(folder)["parent_run_id"]
    runs = children(store, parent_id)
    assert {name: run.info.status for name, run in runs.items()} == {"ok": "FINISHED", "bad_split": "FAILED"}
    assert runs["bad_split"].data.tags["mmgen.error"] == error
    assert "mmgen.error" not in runs["ok"].data.tags
    assert runs["bad_split"].info.run_id == bad["run_id"]
    assert parent_run(store, parent_id).info.status == "FAILED"
    assert parent_run(store, parent_id).data.metrics == {"sweep/finished": 1.0, "sweep/failed": 1.0}

    ok_file = record_file(folder, "ok")
    before = (ok_file.read_bytes(), ok_file.stat().st_mtime_ns)
    caplog.clear()  # the first run's error
    with caplog.at_level(logging.INFO, logger="mmgen"):
        again = run_cli("run", str(path))

    assert again.exit_code == 1, again.output
    assert (
        f"sweep failing: 2 variants, 1 finished earlier (skipped), 1 to run (local, 1 at once); state in {folder}"
        in caplog.messages
    )
    variant_lines = [m.splitlines()[0] for m in caplog.messages if m.startswith("variant ")]
    assert variant_lines == [
        f"variant bad_split: running ({sweep_runner.cores()} threads)",
        f"variant bad_split failed: {error}",
    ]
    assert (ok_file.read_bytes(), ok_file.stat().st_mtime_ns) == before
    again_bad = record(folder, "bad_split")
    assert (again_bad["status"], again_bad["error"], again_bad["run_id"]) == ("FAILED", error, bad["run_id"])
    assert state(folder)["parent_run_id"] == parent_id
    runs = children(store, parent_id)  # the retry reopened its child run: still one per variant
    assert {name: run.info.status for name, run in runs.items()} == {"ok": "FINISHED", "bad_split": "FAILED"}


def test_a_variant_whose_stages_an_earlier_sweep_finished_still_has_its_metrics(store, registry):
    assert run_cli("run", str(write_sweep(store, "once", {"variants": {"first": MASK_SEED_0}}))).exit_code == 0
    path = write_sweep(store, "twice", {"variants": {"again": MASK_SEED_0}})
    folder = sweep_runner.state_dir(load_sweep(path, registry=registry))

    result = run_cli("run", str(path))

    assert result.exit_code == 0, result.output
    assert I2T in children(store, state(folder)["parent_run_id"])["again"].data.metrics


def test_a_sweep_with_a_compare_section_ends_with_the_table(store, registry):
    sweep = {"variants": {"first": MASK_SEED_0}, "compare": {"metrics": [I2T]}}
    path = write_sweep(store, "compared", sweep)
    folder = sweep_runner.state_dir(load_sweep(path, registry=registry))

    result = run_cli("run", str(path))

    assert result.exit_code == 0, result.output
    assert (
        "wrote compare.csv, compare.md, compare.png" in result.output and f"to {folder / 'compare'}/" in result.output
    )
    rows = (folder / "compare" / "compare.csv").read_text().splitlines()
    # The one variant, the one metric asked for (after the variant's key columns).
    assert len(rows) == 2 and rows[1].startswith("first,") and f",{I2T}," in rows[1]


def test_a_killed_sweep_resumes_skipping_finished_variants_and_reopening_the_interrupted_child_run(
    store, registry, caplog, tmp_path
):
    # The second variant repeats ablation's training but samples with another seed: its generate and evaluate
    # stages are new. The test holds its evaluate folder's writer lock, so the sweep waits there, the
    # variant RUNNING, generate done, until the test kills it: a sweep killed mid-variant, every time.
    sweep = {"variants": {"done_first": MASK_SEED_0, "killed": {**MASK_SEED_0, "stages.generate.seed": 5}}}
    path = write_sweep(store, "resume", sweep)
    loaded = load_sweep(path, registry=registry)
    folder = sweep_runner.state_dir(loaded)
    evaluate = stage_folders(loaded.variants[1].recipe, registry=registry)["evaluate"]
    log_path = tmp_path / "killed.log"
    command = [sys.executable, "-c", "from mmgen.cli import main; main()", "run", str(path)]
    env = {**os.environ, "MMGEN_NO_PROGRESS": "1"}

    with stage_folder.writer_lock(evaluate), log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            waiting = f"{evaluate}: waiting for PID {os.getpid()}, which is running this stage"
            deadline = time.monotonic() + KILL_WAIT_S
            while waiting not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert waiting in log_path.read_text(), log_path.read_text()[-3000:]
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)

    first, killed = record(folder, "done_first"), record(folder, "killed")
    assert (first["status"], killed["status"]) == ("FINISHED", "RUNNING")
    parent_id = state(folder)["parent_run_id"]
    assert {name: run.info.status for name, run in children(store, parent_id).items()} == {
        "done_first": "FINISHED",
        "killed": "RUNNING",
    }
    first_file = record_file(folder, "done_first")
    before = (first_file.read_bytes(), first_file.stat().st_mtime_ns)

    with caplog.at_level(logging.INFO, logger="mmgen"):
        result = run_cli("run", str(path))

    assert result.exit_code == 0, result.output
    assert (
        f"sweep resume: 2 variants, 1 finished earlier (skipped), 1 to run (local, 1 at once); state in {folder}"
        in caplog.messages
    )
    assert f"stage generate: already done in {record(folder, 'killed')['stages']['generate']}" in caplog.messages
    assert (first_file.read_bytes(), first_file.stat().st_mtime_ns) == before
    resumed = record(folder, "killed")
    assert (resumed["status"], resumed["run_id"]) == ("FINISHED", killed["run_id"])
    assert resumed["stages"]["evaluate"] == str(evaluate)
    assert state(folder)["parent_run_id"] == parent_id
    runs = children(store, parent_id)
    assert {name: (run.info.status, run.info.run_id) for name, run in runs.items()} == {
        "done_first": ("FINISHED", first["run_id"]),
        "killed": ("FINISHED", killed["run_id"]),
    }
    assert I2T in runs["killed"].data.metrics
    assert parent_run(store, parent_id).info.status == "FINISHED"


def test_jobs_run_variants_in_worker_processes_each_logging_to_its_own_file(store, registry):
    sweep = {"variants": {"mask_only": {OBJECTIVES: MASK}}, "seeds": {"values": [0, 1], "keys": SEED_KEYS}}
    path = write_sweep(store, "parallel", sweep)
    folder = sweep_runner.state_dir(load_sweep(path, registry=registry))

    result = run_cli("run", str(path), "--jobs", "2")

    assert result.exit_code == 0, result.output
    threads = max(1, sweep_runner.cores() // 2)
    parent_id = state(folder)["parent_run_id"]
    runs = children(store, parent_id)
    for name in ("mask_only/seed=0", "mask_only/seed=1"):
        assert record(folder, name)["status"] == "FINISHED"
        assert runs[name].info.status == "FINISHED"
        assert record(folder, name)["pid"] != os.getpid()  # ran in a worker process
        log_text = (folder / "logs" / f"{name.replace('/', '__')}.log").read_text()
        assert f"INFO mmgen.sweep: variant {name}: running ({threads} threads)\n" in log_text
        assert (
            f"INFO mmgen.runner: stage evaluate: already done in {record(folder, name)['stages']['evaluate']}\n"
            in log_text
        )
    assert len({record(folder, name)["pid"] for name in runs}) == 2
    assert sorted(p.name for p in (folder / "logs").iterdir()) == ["mask_only__seed=0.log", "mask_only__seed=1.log"]


def test_the_ray_backend_runs_variants_as_ray_tasks_under_one_parent(store, registry, monkeypatch):
    import ray

    sweep = {"variants": {"mask_only": {OBJECTIVES: MASK}}, "seeds": {"values": [0, 1], "keys": SEED_KEYS}}
    path = write_sweep(store, "on_ray", sweep)
    loaded = load_sweep(path, registry=registry)
    folder = sweep_runner.state_dir(loaded)
    # Each variant asks Ray for cores / jobs CPUs: one here, whatever the machine, so the two fit the 2 CPUs.
    monkeypatch.setattr(sweep_runner, "cores", lambda: 2)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = sweep_runner.run_sweep(loaded, registry=registry, backend="ray", jobs=2)
    finally:
        ray.shutdown()

    assert [(r["name"], r["status"]) for r in outcome.records] == [
        ("mask_only/seed=0", "FINISHED"),
        ("mask_only/seed=1", "FINISHED"),
    ]
    assert outcome.parent_run_id == state(folder)["parent_run_id"]
    runs = children(store, outcome.parent_run_id)
    assert {name: (run.info.status, run.info.run_id) for name, run in runs.items()} == {
        r["name"]: ("FINISHED", r["run_id"]) for r in outcome.records
    }
    assert all(r["pid"] != os.getpid() for r in outcome.records)
    assert sorted(p.name for p in (folder / "logs").iterdir()) == ["mask_only__seed=0.log", "mask_only__seed=1.log"]
    assert parent_run(store, outcome.parent_run_id).info.status == "FINISHED"
