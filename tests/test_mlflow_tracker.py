"""The MLflow tracker against a SQLite store in a temporary folder: experiment kind, where artefacts go, tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from mlflow_helpers import free_port

from mmgen.plugins.trackers.mlflow_tracker import EXPERIMENT_KIND_TAG, MlflowTracker
from mmgen.plugins.trackers.none_tracker import NoneTracker


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store (made once: its schema takes seconds) and a client on it."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return folder, uri, MlflowClient(tracking_uri=uri)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The working folder is not the store's: nothing may land here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def run_once(uri: str, experiment: str) -> MlflowTracker:
    tracker = MlflowTracker(experiment=experiment, tracking_uri=uri)
    tracker.start(run_name="r")
    tracker.end()
    return tracker


def test_a_new_experiment_is_a_training_experiment_with_artefacts_beside_the_database(store, elsewhere):
    folder, uri, client = store
    tracker = MlflowTracker(experiment="new one", tracking_uri=uri)
    tracker.start(run_name="r")
    (elsewhere / "a.txt").write_text("x")
    tracker.log_artifact(elsewhere / "a.txt", artifact_path="stage")
    tracker.end()
    experiment = client.get_experiment_by_name("new one")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert experiment.artifact_location == (folder / "mlruns" / "new_one").as_uri()
    assert (folder / "mlruns" / "new_one" / tracker.run_id / "artifacts" / "stage" / "a.txt").read_text() == "x"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["a.txt"]  # no ./mlruns, no ./mlflow.db


def test_an_existing_experiment_without_a_kind_gets_one(store, elsewhere):
    _, uri, client = store
    experiment_id = client.create_experiment("untyped", artifact_location=(elsewhere / "art").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags
    tracker = run_once(uri, "untyped")
    assert tracker.experiment_id == experiment_id
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_a_kind_someone_chose_is_kept(store, elsewhere):
    _, uri, client = store
    client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    run_once(uri, "chosen")
    assert client.get_experiment_by_name("chosen").tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_tables_and_image_series(store, elsewhere):
    _, uri, client = store
    tracker = MlflowTracker(experiment="tables", tracking_uri=uri)
    tracker.start(run_name="r")
    tracker.log_table({"key": ("a", "b"), "generated": ["red circle", "blue square"]}, file_name="train/captions.json")
    grid = np.full((4, 6, 3), 200, dtype=np.uint8)
    tracker.log_image(grid, file_name="train/samples/step-000003-t2i.png", key="train/samples/t2i", step=3)
    with pytest.raises(ValueError, match=r"MLflow keeps tables as \.json files, got file_name 'captions\.txt'"):
        tracker.log_table({"key": ["a"]}, file_name="captions.txt")
    tracker.end()
    run_id = tracker.run_id
    table = json.loads(Path(client.download_artifacts(run_id, "train/captions.json", str(elsewhere))).read_text())
    assert table == {"columns": ["key", "generated"], "data": [["a", "red circle"], ["b", "blue square"]]}
    assert json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"]) == [
        {"path": "train/captions.json", "type": "table"}
    ]
    assert [a.path for a in client.list_artifacts(run_id, "train/samples")] == ["train/samples/step-000003-t2i.png"]
    series = [a.path.split("/")[1] for a in client.list_artifacts(run_id, "images")]
    assert len(series) == 2 and all(name.startswith("train~samples~t2i+step+3+") for name in series)


def test_the_link_opens_the_run_in_the_training_view(store, elsewhere):
    _, uri, _ = store
    tracker = run_once(uri, "linked")
    page = f"#/experiments/{tracker.experiment_id}/runs/{tracker.run_id}?workflowType=machine_learning"
    assert tracker.location() == (
        f"MLflow run {tracker.run_id} in experiment 'linked': open it with `mlflow ui --backend-store-uri {uri}`, "
        f"at http://127.0.0.1:5000/{page}"
    )
    tracker._uri = "http://127.0.0.1:5001/"
    assert tracker.location() == f"MLflow run {tracker.run_id} in experiment 'linked': http://127.0.0.1:5001/{page}"


def test_the_none_tracker_keeps_no_table(caplog):
    tracker = NoneTracker()
    with caplog.at_level(logging.DEBUG, logger="mmgen.plugins.trackers.none_tracker"):
        tracker.log_table({"key": ["a"], "generated": ["b"]}, file_name="captions.json")
        tracker.log_image(np.zeros((2, 2, 3), dtype=np.uint8), file_name="g.png", key="g", step=1)
    assert caplog.messages == ["table captions.json: 2 columns (not kept)", "image g.png (not kept)"]


def test_a_server_that_stopped_answering_is_one_clear_error_and_end_stays_quiet(monkeypatch, caplog):
    from mlflow.tracking import MlflowClient

    from mmgen.api import TrackerUnavailable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tracker = MlflowTracker(experiment="lost", tracking_uri=uri)
    # As after a successful start() against a server that has since gone away.
    tracker._client, tracker.run_id, tracker._uri = MlflowClient(tracking_uri=uri), "0" * 32, uri
    with pytest.raises(TrackerUnavailable) as info:
        tracker.log_metrics({"train/loss": 1.0}, step=1)
    assert str(info.value) == (
        f"MLflow tracking server {uri} stopped answering while logging metrics (Connection refused); finished "
        "stages are kept: start the server and run the same command again to resume, or use `--set tracker.use=none`"
    )
    with caplog.at_level(logging.WARNING):
        tracker.end(status="FAILED")  # nothing more is sent, nothing more is said
    assert caplog.text == ""
    # A mistake in the call is not dressed up as a lost server.
    with pytest.raises(ValueError, match="MLflow keeps tables as .json files"):
        tracker.log_table({"a": [1]}, file_name="table.csv")
