import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from registry_helpers import ToyStage

from mmgen import __version__
from mmgen.cli import main

TESTS = Path(__file__).parent


@pytest.fixture
def toy_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MMGEN_PLUGINS", "toy_plugin")
    monkeypatch.delenv("MMGEN_STRICT_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    ToyStage.runs.clear()
    return tmp_path


def write_recipe(folder: Path, tracker: str = "{use: none}") -> Path:
    path = folder / "toy.yaml"
    path.write_text(f"name: toy\ntracker: {tracker}\nstages:\n  only:\n    use: toy_stage\n    value: 4\n")
    return path


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output == f"mmgen, version {__version__}\n"
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.output and "plugins" in result.output
    assert runner.invoke(main, ["run", "--help"]).output.startswith("Usage: main run [OPTIONS] RECIPE")


def test_help_is_light_and_survives_a_broken_plugin():
    code = (
        "import sys; from click.testing import CliRunner; from mmgen.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    )
    env = {**os.environ, "MMGEN_PLUGINS": "broken_plugin", "PYTHONPATH": str(TESTS)}
    env.pop("MMGEN_STRICT_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_plugin_whose_commands_fail_is_reported_and_the_rest_work():
    env = {**os.environ, "MMGEN_PLUGINS": "broken_command_plugin", "PYTHONPATH": str(TESTS)}
    env.pop("MMGEN_STRICT_PLUGINS", None)
    out = subprocess.run([sys.executable, "-m", "mmgen.cli", "--help"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "generate" in out.stdout and "data" in out.stdout
    expected = "warning: plugin broken_command_plugin added no commands: RuntimeError: this plugin's command is broken"
    assert expected in out.stderr
    strict = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", "--help"], env={**env, "MMGEN_STRICT_PLUGINS": "1"}, capture_output=True, text=True
    )
    assert strict.returncode != 0 and "this plugin's command is broken" in strict.stderr


def test_hook_tracing_names_each_registration():
    env = {**os.environ, "MMGEN_TRACE_HOOKS": "1"}
    out = subprocess.run([sys.executable, "-m", "mmgen.cli", "plugins"], env=env, capture_output=True, text=True, check=True)
    assert "hook: register_samplers from mmgen.samplers.register registered maskgit" in out.stderr
    assert "hook: register_tasks from mmgen.plugins.tasks.register registered t2i" in out.stderr


def test_plugins_lists_components_with_provider(toy_env):
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    sampler_line = next(line for line in lines if line.strip().startswith("toy_sampler"))
    assert "[toy_plugin]" in sampler_line
    # Generation tasks say what they do.
    assert any(line.split()[0] == "t2i" and line.endswith("  text-guided image generation") for line in lines if line.strip())
    assert "none" in result.output and "mlflow" in result.output


def test_run_then_rerun_is_cached(toy_env):
    recipe = write_recipe(toy_env)
    first = CliRunner().invoke(main, ["-q", "run", str(recipe)])
    assert first.exit_code == 0, first.output
    assert [v for v, _, _ in ToyStage.runs] == [4]
    second = CliRunner().invoke(main, ["-q", "run", str(recipe), "--set", "only.value=4"])
    assert "cached" in second.output and len(ToyStage.runs) == 1
    third = CliRunner().invoke(main, ["-q", "run", str(recipe), "--force"])
    assert third.exit_code == 0 and len(ToyStage.runs) == 2


def test_run_ends_with_a_summary_of_stages_and_their_results(toy_env):
    recipe = write_recipe(toy_env)
    result = CliRunner().invoke(main, ["-q", "run", str(recipe)])
    lines = result.output.splitlines()
    table = lines[lines.index("stage        seconds  folder") :]
    assert table[1].split()[0] == "only" and table[1].split()[2].startswith("runs/artefacts/only-")
    assert table[2].split()[0] == "total"
    assert table[3:] == ["", "only:", "  value 4"]  # the stage's own summary lines
    again = CliRunner().invoke(main, ["-q", "run", str(recipe)])
    assert "only          cached" in again.output and "  value 4" in again.output


def test_bad_recipe_value_is_a_clean_error(toy_env):
    recipe = write_recipe(toy_env)
    result = CliRunner().invoke(main, ["run", str(recipe), "--set", "only.value=8.7"])
    assert result.exit_code == 2
    assert result.stderr == "error: --set only.value=8.7: stages.only.value: expected an integer, got 8.7 (float)\n"
    assert ToyStage.runs == []


def test_dry_run_prints_resolved_recipe(toy_env):
    recipe = write_recipe(toy_env)
    result = CliRunner().invoke(main, ["run", str(recipe), "--dry-run"])
    assert result.exit_code == 0
    assert "sampler:\n      use: toy_sampler\n      steps: 10" in result.output
    assert ToyStage.runs == []


def test_unreachable_tracking_server_fails_before_work(toy_env):
    recipe = write_recipe(toy_env, tracker="{use: mlflow, tracking_uri: 'http://127.0.0.1:9', check_timeout_s: 2}")
    result = CliRunner().invoke(main, ["run", str(recipe)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: MLflow tracking server http://127.0.0.1:9 is unreachable")
    assert ToyStage.runs == []


def test_mlflow_run_holds_recipe_params_and_metrics(toy_env, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recipe = write_recipe(toy_env, tracker="{use: mlflow, experiment: toys}")
    result = CliRunner().invoke(main, ["-q", "run", str(recipe)])
    assert result.exit_code == 0, result.output
    # MLflow's default store: a SQLite file in the working directory.
    assert (toy_env / "mlflow.db").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{toy_env / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("toys")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["stages.only.value"] == "4"
    assert run.data.params["stages.only.sampler.steps"] == "10"
    assert "only/seconds" in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["recipe.yaml"]
    # The summary says where to find the run.
    assert f"MLflow run {run.info.run_id} in experiment 'toys': open it with `mlflow ui`" in result.output


def test_third_party_plugin_package_installs_and_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(TESTS / "plugin_pkg")],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("MMGEN_PLUGINS", None)
    mmgen = [sys.executable, "-m", "mmgen.cli"]
    listing = subprocess.run([*mmgen, "plugins"], env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert any(line.split()[:3] == ["jsonl", "mmgen-jsonl", "0.2.0"] for line in listing.splitlines())
    assert any(line.split()[:3] == ["note", "mmgen-jsonl", "0.2.0"] for line in listing.splitlines())
    recipe = tmp_path / "note.yaml"
    recipe.write_text("name: hello\ntracker: {use: jsonl, path: events.jsonl}\nstages:\n  greet: {use: note, text: hi, repeat: 2}\n")
    subprocess.run([*mmgen, "-q", "run", str(recipe)], env=env, check=True, cwd=tmp_path, capture_output=True)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "params", "text", "text", "metrics", "metrics", "end"]
    assert events[3]["text"] == "hi\nhi" and events[-1]["status"] == "FINISHED"
