"""A bad recipe is one line on stderr, exit status 2, before any work and before a tracker run opens.

Each error names the recipe file (or the `--set` that caused it) and the YAML
path, with a hint where the mistake is a common misplacement. `-v` adds the
traceback. Run through the real command line, with the built-in plugins.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from recipe_helpers import TINY

from mmgen.cli import main
from mmgen.errors import UserError

STAGES = "cache, clip, data, evaluate, finetune, generate, in_context_evaluate, in_context_finetune, tokenizers, train"
TRAIN_OPTIONS = (
    "model, objectives, tasks, trainer, condition_dropout, caption_weights, samples, tokenizers_stage, cache_stage"
)


@pytest.fixture
def workdir(monkeypatch, tmp_path):
    """A fresh working directory, the built-in plugins only, MLflow's default store (in the working directory)."""
    monkeypatch.delenv("MMGEN_PLUGINS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def recipe(folder: Path, text: str = TINY, **stage_changes) -> Path:
    """TINY with whole stages replaced (`None` drops the stage), written to folder/recipe.yaml."""
    data = yaml.safe_load(text)
    for key, options in stage_changes.items():
        if options is None:
            del data["stages"][key]
        else:
            data["stages"][key] = options
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stderr


def assert_nothing_done(folder: Path) -> None:
    """No stage folder, no MLflow store or run: the command stopped before any work."""
    assert not (folder / "runs").exists()
    assert not (folder / "mlflow.db").exists() and not (folder / "mlruns").exists()


def fails_with(folder: Path, message: str, *args: str) -> None:
    """`mmgen run` and `mmgen run --dry-run` both print exactly `error: <message>` and exit with status 2."""
    for dry_run in ([], ["--dry-run"]):
        code, stderr = run("run", *args, *dry_run)
        assert (code, stderr) == (2, f"error: {message}\n")
    assert_nothing_done(folder)


# ---- the examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, shown",
    [(["fast"], "['fast'] (list)"), ("fast", "'fast' (str)"), (3, "3 (int)")],
    ids=["list", "string", "number"],
)
def test_a_stage_written_as_a_list_or_scalar(workdir, options, shown):
    path = recipe(workdir, cache=options)
    fails_with(
        workdir,
        f"{path}: stages.cache: expected a mapping of the stage's options (`cache: {{}}` for the defaults,"
        f" `cache: {{use: <stage>, ...}}` for another stage plugin), got {shown}",
        str(path),
    )


def test_a_stage_with_no_options_takes_the_defaults(workdir):
    path = workdir / "recipe.yaml"
    path.write_text(TINY.replace("  cache: {}\n", "  cache:\n"))  # null: the defaults, like {}
    code, _ = run("run", str(path), "--dry-run")
    assert code == 0


def test_a_missing_lmdb_store(workdir):
    path = recipe(workdir, data={"dataset": {"use": "lmdb", "path": "stores/coco"}})
    fails_with(
        workdir,
        f"{path}: stages.data.dataset.path: no folder at 'stores/coco'"
        f" (a relative path is read from the working directory, {os.getcwd()})",
        str(path),
    )


def test_an_lmdb_folder_without_stores(workdir):
    (workdir / "stores").mkdir()
    path = recipe(workdir, data={"dataset": {"use": "lmdb", "path": str(workdir / "stores")}})
    fails_with(
        workdir,
        f"{path}: stages.data.dataset.path: '{workdir / 'stores'}' is neither an lmdb store nor a folder"
        " of <split>.lmdb stores (`mmgen data ingest` writes them)",
        str(path),
    )


def test_a_missing_taming_checkpoint(workdir):
    tokenizers = {"tokenizers": [{"use": "vqgan", "preset": "tiny", "taming_checkpoint": str(workdir / "vq.ckpt")}]}
    path = recipe(workdir, tokenizers=tokenizers)
    fails_with(
        workdir,
        f"{path}: stages.tokenizers.tokenizers[0].taming_checkpoint: no file at '{workdir / 'vq.ckpt'}'",
        str(path),
    )


def test_a_folder_where_the_perceptual_weights_file_belongs(workdir):
    (workdir / "lpips").mkdir()
    loss = {"perceptual_weights": "lpips"}
    path = recipe(workdir, tokenizers={"tokenizers": [{"use": "vqgan", "preset": "tiny", "loss": loss}]})
    fails_with(
        workdir,
        f"{path}: stages.tokenizers.tokenizers[0].loss.perceptual_weights: 'lpips' is a folder, not a file"
        f" (a relative path is read from the working directory, {os.getcwd()})",
        str(path),
    )


def test_a_tokenizers_stage_without_tokenizers(workdir):
    path = recipe(workdir, tokenizers={"tokenizers": []})
    fails_with(
        workdir,
        f"{path}: stages.tokenizers.tokenizers: the tokenizers stage needs at least one tokenizer:"
        " give `tokenizers: [{use: ...}]` or a keep_stage",
        str(path),
    )


# ---- misplaced options: a hint -------------------------------------------------------------


DATASET_AS_STAGE = (
    f"no stage named 'shapes' (registered: {STAGES}); 'shapes' is a dataset, not a stage:"
    " the 'data' stage takes it as `dataset: {use: shapes, ...}`"
)


def test_dataset_options_at_stage_level(workdir):
    path = recipe(workdir, data={"use": "shapes", "size": 32})
    fails_with(workdir, f"{path}: stages.data.use: {DATASET_AS_STAGE}", str(path))


def test_a_dataset_written_as_a_stage(workdir):
    path = recipe(workdir, data=None)
    data = yaml.safe_load(path.read_text())
    data["stages"] = {"shapes": {"size": 32}, **data["stages"]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    fails_with(workdir, f"{path}: stages.shapes.use: {DATASET_AS_STAGE}", str(path))


def test_a_dataset_named_as_a_stage_option(workdir):
    path = recipe(workdir, data={"shapes": {"size": 32}})
    fails_with(
        workdir,
        f"{path}: stages.data.shapes: unknown option for DataStage.Config; 'shapes' is a dataset:"
        " write `dataset: {use: shapes, ...}` (options: dataset, splits, max_pixels)",
        str(path),
    )


def test_steps_outside_the_trainer(workdir):
    path = recipe(workdir, train={"model": {"use": "magvlt", "preset": "tiny"}, "steps": 2})
    fails_with(
        workdir,
        f"{path}: stages.train.steps: unknown option for TrainModelStage.Config; did you mean 'trainer.steps'?"
        f" (options: {TRAIN_OPTIONS})",
        str(path),
    )


def test_model_options_next_to_the_model(workdir):
    path = recipe(workdir, train={"model": {"use": "magvlt"}, "preset": "tiny"})
    fails_with(
        workdir,
        f"{path}: stages.train.preset: unknown option for TrainModelStage.Config; did you mean 'model.preset'?"
        f" (options: {TRAIN_OPTIONS})",
        str(path),
    )


def test_a_tokenizer_option_outside_its_train_options(workdir):
    vqgan = {"use": "vqgan", "preset": "tiny", "batch_size": 4}
    path = recipe(workdir, tokenizers={"tokenizers": [vqgan]})
    fails_with(
        workdir,
        f"{path}: stages.tokenizers.tokenizers[0].batch_size: unknown option for VQGANTokenizer.Config;"
        " did you mean 'train.batch_size'? (options: modality, preset, architecture, resolution, taming_checkpoint, loss, train)",
        str(path),
    )


def test_stage_options_at_the_top_of_the_recipe(workdir):
    path = workdir / "recipe.yaml"
    path.write_text(TINY + "trainer: {steps: 5}\n")
    fails_with(
        workdir,
        f"{path}: trainer: unknown recipe option; it is an option of stage 'train': put it under `stages.train`"
        " (options: name, description, seed, device, workdir, tracker, reuse, stages)",
        str(path),
    )


def test_a_stage_outside_stages(workdir):
    path = workdir / "recipe.yaml"
    path.write_text(TINY + "clip: {width: 64}\n")
    fails_with(
        workdir,
        f"{path}: clip: unknown recipe option; 'clip' is a stage: put it under `stages:`"
        " (options: name, description, seed, device, workdir, tracker, reuse, stages)",
        str(path),
    )


def test_stage_options_nested_one_level_too_deep(workdir):
    path = recipe(workdir, train={"train": {"model": {"use": "magvlt", "preset": "tiny"}}})
    fails_with(
        workdir,
        f"{path}: stages.train.train: the stage's options are nested one level too deep:"
        " write `train: {...}`, not `train: {train: {...}}`",
        str(path),
    )


# ---- other structural errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        ("seed: [1]", "seed: expected an integer, got [1] (list)"),
        ("name: {a: 1}", "name: expected a string, got {'a': 1} (dict)"),
        ("device: cdua", "device: expected one of ['auto', 'cpu', 'cuda'], got 'cdua' (str); did you mean 'cuda'?"),
        ("tracker: null", "tracker: expected a mapping with `use: <tracker name>`, got None (NoneType)"),
        ("tracker: [mlflow]", "tracker: expected a mapping with `use: <tracker name>`, got ['mlflow'] (list)"),
        ("tracker: {use: mlfow}", "tracker.use: no tracker named 'mlfow'; did you mean 'mlflow'? (registered: mlflow, none)"),
        ("naem: tiny", "naem: unknown recipe option; did you mean 'name'? (options: name, description, seed, device, workdir, tracker, reuse, stages)"),
    ],
)  # fmt: skip
def test_header_errors(workdir, line, message):
    key = line.split(":")[0]
    kept = [row for row in TINY.splitlines() if not row.startswith(f"{key}:")]
    path = workdir / "recipe.yaml"
    path.write_text(f"{line}\n" + "\n".join(kept) + "\n")
    fails_with(workdir, f"{path}: {message}", str(path))


def test_stages_as_a_list(workdir):
    path = workdir / "recipe.yaml"
    path.write_text("name: tiny\nstages: [data, train]\n")
    message = "stages: expected a non-empty mapping of stage name -> options (`data: {...}`), got ['data', 'train'] (list)"
    fails_with(workdir, f"{path}: {message}", str(path))


def test_a_component_of_the_wrong_kind(workdir):
    path = recipe(workdir, train={"model": {"use": "maskgit"}})
    fails_with(
        workdir,
        f"{path}: stages.train.model.use: no model named 'maskgit'; did you mean 'magvlt'? (registered: argvlt, magvlt);"
        " 'maskgit' is a sampler, not a model",
        str(path),
    )


def test_a_component_without_use(workdir):
    path = recipe(workdir, train={"model": {"preset": "tiny"}})
    fails_with(workdir, f"{path}: stages.train.model.use: missing; name the model (registered: argvlt, magvlt)", str(path))


def test_a_long_value_is_shortened(workdir):
    path = recipe(workdir, train={"model": {"use": "magvlt", "preset": "tiny"}, "trainer": ["x" * 100]})
    shown = repr(["x" * 100])[:77]
    message = f"stages.train.trainer: expected a mapping of options for TrainerConfig, got {shown}... (list)"
    fails_with(workdir, f"{path}: {message}", str(path))


def test_a_stage_reading_a_stage_that_is_not_there(workdir):
    path = recipe(workdir, data=None)
    fails_with(
        workdir,
        f"{path}: stages.tokenizers.data_stage: reads stage 'data', but no earlier stage is called that (earlier: none)",
        str(path),
    )
    path = recipe(workdir, cache=None)
    fails_with(
        workdir,
        f"{path}: stages.train.cache_stage: reads stage 'cache', but no earlier stage is called that"
        " (earlier: data, tokenizers)",  # each once, though a stage is found by its key and by its plugin name
        str(path),
    )


# ---- --set ----------------------------------------------------------------------------------


def test_set_tracker_use_none_switches_the_tracker(workdir):
    path = recipe(workdir)
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--set", "tracker.use=none"])
    assert result.exit_code == 0, result.output
    # The mlflow tracker's options (experiment: tiny) belonged to mlflow: they go with it.
    assert yaml.safe_load(result.stdout)["tracker"] == {"use": "none"}
    # Naming the plugin it already uses changes nothing.
    same = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--set", "tracker.use=mlflow"])
    assert yaml.safe_load(same.stdout)["tracker"]["experiment"] == "tiny"
    # Options set after the switch belong to the new plugin.
    switched = ["--set", "train.model.use=magvlt", "--set", "data.dataset.use=shapes", "--set", "data.dataset.size=64"]
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", *switched])
    assert yaml.safe_load(result.stdout)["stages"]["data"]["dataset"]["size"] == 64


def test_set_tracker_use_none_runs_untracked(workdir, monkeypatch):
    import mmgen.runner

    ran = []
    monkeypatch.setattr(mmgen.runner, "_run_stages", lambda recipe, **_: ran.append(recipe.header.tracker.use) or [])
    path = recipe(workdir)
    code, stderr = run("run", str(path), "--set", "tracker.use=none")
    assert (code, stderr, ran) == (0, "", ["none"])
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlruns").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.trainer.steps=abc", "stages.train.trainer.steps: expected an integer, got 'abc' (str)"),
        ("tracker.use=none", None),  # valid: listed so the next case shows what a later option does
        ("train.stepz=3", f"stages.train.stepz: unknown option for TrainModelStage.Config (options: {TRAIN_OPTIONS})"),
        ("train.steps=3", f"stages.train.steps: unknown option for TrainModelStage.Config; did you mean 'trainer.steps'? (options: {TRAIN_OPTIONS})"),
        ("data.use=shapes", f"stages.data.use: {DATASET_AS_STAGE}"),
        ("cache=[fast]", "stages.cache: expected a mapping of the stage's options (`cache: {}` for the defaults, `cache: {use: <stage>, ...}` for another stage plugin), got ['fast'] (list)"),
        ("trainer.steps=5", "trainer: unknown recipe option; it is an option of stage 'train': put it under `stages.train` (options: name, description, seed, device, workdir, tracker, reuse, stages)"),
    ],
)  # fmt: skip
def test_an_error_from_a_set_names_the_set(workdir, override, message):
    path = recipe(workdir)
    if message is None:
        assert run("run", str(path), "--dry-run", "--set", override)[0] == 0
        return
    fails_with(workdir, f"--set {override}: {message}", str(path), "--set", override)


def test_options_of_the_old_plugin_after_a_switch_blame_the_set(workdir):
    path = recipe(workdir)
    args = ("--set", "tracker.use=none", "--set", "tracker.experiment=x")
    message = "tracker.experiment: unknown option for NoneTracker.Config (options: none)"
    fails_with(workdir, f"--set tracker.experiment=x: {message}", str(path), *args)


def test_an_error_beside_a_set_names_the_file_and_the_set(workdir):
    # The --set made the trainer invalid, but the message is about the whole trainer mapping, which the file wrote.
    path = recipe(workdir)
    fails_with(
        workdir,
        f"{path} with --set train.trainer.warmup_steps=9: stages.train.trainer: warmup_steps (9) must be <= steps (2)",
        str(path),
        "--set",
        "train.trainer.warmup_steps=9",
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("novalue", "--set novalue: expected KEY.PATH=VALUE"),
        ("train..steps=1", "--set train..steps=1: empty key in 'train..steps'"),
        ("seed.x=1", "--set seed.x=1: seed is 0, not a mapping"),
        ("seed=[1", "--set seed=[1: invalid YAML value: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_a_malformed_set(workdir, override, message):
    path = recipe(workdir)
    path.write_text(path.read_text() + "seed: 0\n")
    fails_with(workdir, message, str(path), "--set", override)


# ---- the command line: one line, exit status 2, -v for the traceback ------------------------


def test_verbose_adds_the_traceback(workdir):
    path = recipe(workdir, cache="fast")
    code, stderr = run("run", str(path))
    assert code == 2 and "Traceback" not in stderr and len(stderr.splitlines()) == 1
    code, stderr = run("-v", "run", str(path))
    assert code == 2
    assert stderr.startswith("Traceback (most recent call last):\n")
    assert stderr.splitlines()[-1] == f"error: {path}: " + stderr.split(f"error: {path}: ", 1)[1].rstrip("\n")
    assert "mmgen.recipe.RecipeError: " in stderr


def test_every_command_reports_user_errors_the_same_way(workdir):
    @click.command("broken-input")
    def broken_input() -> None:
        raise UserError("inputs/x.json: not found")

    @click.command("broken-code")
    def broken_code() -> None:
        raise RuntimeError("a bug")

    main.add_command(broken_input)
    main.add_command(broken_code)
    try:
        assert run("broken-input") == (2, "error: inputs/x.json: not found\n")
        # A bug is not a user error: it keeps its traceback and exit status 1.
        result = CliRunner().invoke(main, ["broken-code"])
        assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    finally:
        del main.commands["broken-input"], main.commands["broken-code"]


def test_a_missing_run_folder_for_generate(workdir):
    code, stderr = run("generate", "--task", "t2i", "--prompt", "a red circle", "--tracker", "none")
    assert code == 2 and "Traceback" not in stderr
    assert stderr.splitlines() == [
        "error: mmgen generate: generation reads the 'train' stage: give --run DIR or --stage train=DIR"
    ]
