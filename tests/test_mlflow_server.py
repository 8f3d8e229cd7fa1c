"""End to end: a tiny recipe tracked by a real `mlflow server` on loopback, checked through its REST API.

The server keeps its database and artefacts in a temporary folder. After the
run, the REST API must show a finished run with the recipe's params, metrics
named under their stage's key, the training samples and generation grids (PNG
files and image series) and the caption tables, in an experiment marked as
classic training. With Chromium installed, headless screenshots of the
experiment and run pages are saved for a person to look at: under
`test-artefacts/` in the repository, or MMGEN_TEST_ARTEFACTS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow_helpers import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"

RECIPE = """\
name: mlflow-e2e
seed: 0
device: cpu
workdir: {workdir}
tracker: {{use: mlflow, experiment: e2e, tracking_uri: '{uri}'}}
stages:
  data:
    dataset: {{use: shapes, size: 32, max_objects: 1, object_order: reading, train: 64, val: 8, test: 4, holdout: 0}}
  tokenizers:
    tokenizers:
      - {{use: vqgan, preset: tiny, train: {{steps: 4, batch_size: 8, warmup_steps: 1, log_every: 2, checkpoint_every: 4, eval_images: 4, grid_images: 4}}}}
      - {{use: sentencepiece_bpe, vocab_size: 64, max_length: 16}}
  cache: {{}}
  train:
    model: {{use: magvlt, preset: tiny}}
    objectives: [{{use: mask}}, {{use: target_length}}]
    trainer: {{steps: 6, batch_size: 8, lr: 1e-3, warmup_steps: 1, log_every: 2, checkpoint_every: 6}}
    samples: {{every: 3, prompts: 4}}
  generate:
    tasks: [t2i, i2t]
    prompts: 4
    sampler: {{use: maskgit, fixed: {{steps: 2}}, variable: {{steps: 2}}}}
  evaluate:
    metrics: [{{use: shapes_accuracy}}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free loopback port, its store and artefacts in a temporary folder; its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = start_server(folder, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


def api(url: str, endpoint: str, body: dict | None = None, **query: str):
    """GET (with query) or POST (with a JSON body) on the REST API; the decoded answer."""
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def artefact_paths(url: str, run_id: str, path: str = "") -> list[str]:
    """Every file under `path` in the run's artefacts, recursively."""
    listing = api(url, "artifacts/list", run_id=run_id, path=path) if path else api(url, "artifacts/list", run_id=run_id)
    files = []
    for entry in listing.get("files", []):
        files += artefact_paths(url, run_id, entry["path"]) if entry["is_dir"] else [entry["path"]]
    return files


def download(url: str, run_id: str, path: str) -> bytes:
    address = f"{url}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    with urllib.request.urlopen(address, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def tracked_run(server, tmp_path_factory):
    """`mmgen run` of the tiny recipe against the server, in a clean working folder: (url, run, stdout, cwd)."""
    work = tmp_path_factory.mktemp("e2e")
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(workdir=work / "runs", uri=server))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-m", "mmgen.cli", "-q", "run", str(recipe)], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (experiment,) = [e for e in api(server, "experiments/search", {"max_results": 10})["experiments"] if e["name"] == "e2e"]
    (run,) = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    return server, experiment, run, result.stdout, work


def test_the_run_is_finished_with_the_recipes_params(tracked_run):
    url, experiment, run, stdout, _ = tracked_run
    info = api(url, "runs/get", run_id=run["info"]["run_id"])["run"]["info"]
    assert (info["run_name"], info["status"]) == ("mlflow-e2e", "FINISHED")
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["stages.train.trainer.steps"] == "6"
    assert params["stages.generate.prompts"] == "4"
    assert not any(key.startswith("tracker") for key in params)
    tags = {t["key"]: t["value"] for t in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    # The summary's link opens the run in the UI's training view.
    page = f"{url}/#/experiments/{experiment['experiment_id']}/runs/{info['run_id']}?workflowType=machine_learning"
    assert f"MLflow run {info['run_id']} in experiment 'e2e': {page}" in stdout


def test_every_metric_is_under_its_stage_key(tracked_run):
    url, _, run, _, _ = tracked_run
    names = {m["key"] for m in run["data"]["metrics"]}
    stages = {"data", "tokenizers", "cache", "train", "generate", "evaluate"}
    assert {name.split("/")[0] for name in names} == stages
    assert {f"{stage}/seconds" for stage in stages} <= names
    assert {"train/loss", "train/lr", "train/parameters", "cache/train/records", "data/test/records"} <= names
    assert {"evaluate/one_sample/shapes_accuracy/t2i/n", "evaluate/one_sample/shapes_accuracy/i2t/n"} <= names
    assert {"evaluate/one_sample/time/t2i/seconds_per_output", "evaluate/one_sample/time/i2t/seconds_per_output"} <= names
    run_id = run["info"]["run_id"]
    history = api(url, "metrics/get-history", run_id=run_id, metric_key="train/loss")["metrics"]
    assert [m["step"] for m in history] == [2, 4, 6]
    (records,) = api(url, "metrics/get-history", run_id=run_id, metric_key="cache/test/records")["metrics"]
    assert records["value"] == 4.0


def test_grids_and_caption_tables_are_in_the_run(tracked_run):
    url, _, run, _, work = tracked_run
    run_id = run["info"]["run_id"]
    files = set(artefact_paths(url, run_id))
    samples = {f"train/samples/step-{s:06d}-{t}.png" for s in (3, 6) for t in ("t2i", "i2t")}
    samples |= {"train/samples/step-000003-i2t.json", "train/samples/step-000006-i2t.json"}
    one = "generate/one_sample"  # the recipe names no protocols: one sample per prompt
    generate = {f"{one}/grid-t2i.png", f"{one}/grid-i2t.png", f"{one}/captions-i2t.json"}
    generate |= {f"{one}/generations.jsonl", "generate/protocols.json"}
    assert samples | generate | {"recipe.yaml", "evaluate/metrics.json", "evaluate/results.md"} <= files
    assert download(url, run_id, f"{one}/grid-t2i.png")[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads(download(url, run_id, f"{one}/captions-i2t.json"))
    assert table["columns"] == ["key", "generated", "reference"] and len(table["data"]) == 4
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert {"path": f"{one}/captions-i2t.json", "type": "table"} in json.loads(tags["mlflow.loggedArtifacts"])
    # Image series for the run page's Model metrics tab: a PNG and a thumbnail per step.
    series = sorted(path.split("/")[1].split("+")[:3] for path in files if path.startswith("images/"))
    expected = [["generate~one_sample~grid-i2t", "step", "0"], ["generate~one_sample~grid-t2i", "step", "0"]]
    expected += [[f"train~samples~{t}", "step", str(s)] for t in ("i2t", "t2i") for s in (3, 6)]
    assert series == sorted(expected * 2)
    # Nothing was written beside the run: no ./mlruns, no ./mlflow.db in the working folder.
    assert sorted(p.name for p in work.iterdir()) == ["recipe.yaml", "runs"]


def screenshot(url: str, target: Path, *, height: int = 1000) -> None:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--screenshot={target}", f"--window-size=1400,{height}", "--virtual-time-budget=20000", url]
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM} for screenshots (apt-get install chromium)")
def test_screenshots_of_the_experiment_and_run_pages(tracked_run):
    url, experiment, run, _, _ = tracked_run
    folder = Path(os.environ.get("MMGEN_TEST_ARTEFACTS", ROOT / "test-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    page = f"{url}/#/experiments/{experiment['experiment_id']}"
    view = "?workflowType=machine_learning"
    run_page = f"{page}/runs/{run['info']['run_id']}"
    screenshot(f"{page}{view}", folder / "mlflow-experiment.png")
    screenshot(f"{run_page}{view}", folder / "mlflow-run.png", height=1600)
    screenshot(f"{run_page}/artifacts/train/samples/step-000006-t2i.png{view}", folder / "mlflow-run-samples.png")
    screenshot(f"{run_page}/artifacts/generate/grid-t2i.png{view}", folder / "mlflow-run-grid.png")
    screenshot(f"{run_page}/artifacts/generate/captions-i2t.json{view}", folder / "mlflow-run-captions.png")
