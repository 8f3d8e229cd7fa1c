"""MLflow tracking: one MLflow run per `mmgen run`, holding params, metrics and artefacts.

Experiments are marked as classic training (`mlflow.experimentKind`), and the
link printed after a run asks the UI for its model-training view: MLflow 3
opens an experiment on its GenAI traces otherwise, with the runs a tab away.

In a local SQLite store, an experiment's artefacts live beside the database
(`<folder of the .db>/mlruns/<experiment>`): MLflow's default is `./mlruns` of
whatever folder the process runs in, which scatters files of a run far from
the database that records it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Iterator

import attrs

from mmgen.api import TrackerUnavailable

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow rejects longer parameter values
PARAMS_PER_BATCH = 100
# The experiment tag MLflow 3 reads for an experiment's kind, and the kind of classic training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# MLflow 3.17's UI keeps its GenAI / model-training switch in the page, not the experiment: links set it.
UI_VIEW = "workflowType=machine_learning"


def check_server(uri: str, *, timeout_s: float) -> None:
    """Fail fast with a clear message when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackerUnavailable(
            f"MLflow tracking server {uri} is unreachable ({reason}). Start it (`mlflow server`), point "
            "MLFLOW_TRACKING_URI or the recipe's `tracker.tracking_uri` elsewhere, or use `tracker: {use: none}`."
        ) from None


def local_artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a local SQLite store keeps its artefacts: beside the database; None elsewhere
    (a server or a file store chooses its own)."""
    prefix = "sqlite:///"
    database = uri[len(prefix) :].split("?")[0] if uri.startswith(prefix) else ""
    if not database or database == ":memory:":
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return (Path(database).resolve().parent / "mlruns" / folder).as_uri()


def training_experiment(client: Any, name: str, *, uri: str) -> str:
    """The id of experiment `name`, created if missing, marked as classic training unless it has a kind already
    (one a person chose is kept)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = local_artifact_location(uri, name)
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    if not experiment.tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return experiment.experiment_id


@contextlib.contextmanager
def reporting_loss(uri: str, what: str) -> Iterator[None]:
    """A tracking server lost mid-run is one clear error, not a traceback from deep in MLflow's client.

    MLflow has already retried (MLFLOW_HTTP_REQUEST_MAX_RETRIES times, backing off), so a short blip passes
    unnoticed; what reaches here is a server that stayed away. The stage it interrupts resumes on a re-run.
    """
    try:
        yield
    except Exception as exc:
        if not (uri.startswith(("http://", "https://")) and unreachable(exc)):
            raise
        raise TrackerUnavailable(
            f"MLflow tracking server {uri} stopped answering while logging {what} ({transport_reason(exc)}); "
            "finished stages are kept: start the server and run the same command again to resume, "
            "or use `--set tracker.use=none`"
        ) from None


def transport_reason(exc: Exception) -> str:
    """The innermost cause in MLflow's nested transport error: 'ConnectionRefusedError: Connection refused'."""
    errno_text = re.findall(r"\[Errno \d+\] ([^\"'\)]+)", str(exc))
    if errno_text:
        return errno_text[-1].strip()
    causes = re.findall(r"(\w+Error)\((?:\d+, )?'([^']+)'", str(exc))
    if causes:
        return "{}: {}".format(*causes[-1])
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def unreachable(exc: Exception) -> bool:
    """Whether an error from MLflow's client means the server could not be reached (not a bad request)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - MLflow depends on requests
        requests = None
    if requests is not None and isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    # MLflow's REST client wraps transport failures (after its retries) in this wording.
    return "API request to" in str(exc) and "failed with exception" in str(exc)


class MlflowTracker:
    name: ClassVar[str] = "mlflow"

    @attrs.frozen(kw_only=True)
    class Config:
        experiment: str = "mmgen"
        # None: MLFLOW_TRACKING_URI if set, else MLflow's default store in the working directory.
        tracking_uri: str | None = None
        check_timeout_s: float = 5.0

    def __init__(self, *, experiment: str = "mmgen", tracking_uri: str | None = None, check_timeout_s: float = 5.0):
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.check_timeout_s = check_timeout_s
        self._client: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._uri = ""
        self._lost = False

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> MlflowTracker:
        return cls(experiment=config.experiment, tracking_uri=config.tracking_uri, check_timeout_s=config.check_timeout_s)

    def resolved_uri(self) -> str | None:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")

    def start(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Open a new run (a child of `parent_run_id` when given), or reopen run `run_id` to go on with it (a
        sweep's interrupted variant, so it keeps one run in the UI)."""
        uri = self.resolved_uri()
        if uri:
            check_server(uri, timeout_s=self.check_timeout_s)
        import mlflow
        from mlflow.tracking import MlflowClient

        # MLflow's default when nothing names a store: mlflow.db in the working folder (./mlruns if it holds one).
        self._uri = uri or mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=self._uri)
        experiment_id = training_experiment(client, self.experiment, uri=self._uri)
        run_tags = dict(tags or {})
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            for key, value in run_tags.items():
                client.set_tag(run_id, key, value)
        else:
            run_id = client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id
        self._client, self.run_id, self.experiment_id = client, run_id, experiment_id
        log.info("MLflow run %s in experiment %r (%s)", self.run_id, self.experiment, self._uri)

    @property
    def store(self) -> str:
        """The tracking URI in use once started, a local SQLite file as an absolute path (a sweep's workers,
        wherever they run, log to the same store)."""
        prefix = "sqlite:///"
        if self._uri.startswith(prefix) and not self._uri[len(prefix) :].startswith("/"):
            return prefix + str(Path(self._uri[len(prefix) :]).resolve())
        return self._uri

    def location(self) -> str | None:
        """Where a person finds the run: its id, experiment, and the command that shows it."""
        if self.run_id is None:
            return None
        page = f"#/experiments/{self.experiment_id}/runs/{self.run_id}?{UI_VIEW}"
        where = f"MLflow run {self.run_id} in experiment {self.experiment!r}"
        if self._uri.startswith(("http://", "https://")):
            return f"{where}: {self._uri.rstrip('/')}/{page}"
        here = {"sqlite:///mlflow.db", f"sqlite:///{Path.cwd() / 'mlflow.db'}"}
        ui = "mlflow ui" if self._uri in here else f"mlflow ui --backend-store-uri {self._uri}"
        return f"{where}: open it with `{ui}`, at http://127.0.0.1:5000/{page}"

    def child(self) -> MlflowTracker:
        """A tracker for a child run (sweeps): call `start(..., parent_run_id=self.run_id)`."""
        return MlflowTracker(experiment=self.experiment, tracking_uri=self.tracking_uri, check_timeout_s=self.check_timeout_s)

    @contextlib.contextmanager
    def _reporting(self, what: str) -> Iterator[None]:
        try:
            with reporting_loss(self._uri, what):
                yield
        except TrackerUnavailable:
            self._lost = True  # nothing more is sent: `end` cannot mark the run either
            raise

    def _require(self) -> Any:
        if self._client is None:
            raise RuntimeError("MlflowTracker used before start()")
        return self._client

    def log_params(self, params: Mapping[str, Any]) -> None:
        with self._reporting("params"):
            from mlflow.entities import Param

            client = self._require()
            items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
            for i in range(0, len(items), PARAMS_PER_BATCH):
                client.log_batch(self.run_id, params=items[i : i + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        with self._reporting("metrics"):
            from mlflow.entities import Metric

            import time

            client = self._require()
            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
            for i in range(0, len(items), 1000):
                client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        with self._reporting(f"{path}"):
            path = Path(path)
            client = self._require()
            if path.is_dir():
                client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, *, file_name: str) -> None:
        with self._reporting(file_name):
            self._require().log_text(self.run_id, text, file_name)

    def log_image(self, image: Any, *, file_name: str, key: str | None = None, step: int | None = None) -> None:
        with self._reporting(file_name):
            from PIL import Image

            client = self._require()
            picture = Image.fromarray(image)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / Path(file_name).name
                target.write_bytes(buffer.getvalue())
                parent = str(Path(file_name).parent)
                client.log_artifact(self.run_id, str(target), None if parent == "." else parent)
            if key is not None:
                # The series the run page's "Model metrics" tab shows with a step slider; written before this returns.
                client.log_image(self.run_id, picture, key=key, step=step or 0, synchronous=True)

    def log_table(self, data: Mapping[str, Sequence[Any]], *, file_name: str) -> None:
        """Columns as an MLflow table (JSON, `split` orient), which the run's artefact view shows as a table."""
        with self._reporting(file_name):
            if not file_name.endswith(".json"):
                raise ValueError(f"MLflow keeps tables as .json files, got file_name {file_name!r}")
            self._require().log_table(self.run_id, data={k: list(v) for k, v in data.items()}, artifact_file=file_name)

    def set_tag(self, key: str, value: str) -> None:
        """A tag on the run (a sweep marks a failed variant's run with its error)."""
        with self._reporting(f"tag {key}"):
            self._require().set_tag(self.run_id, key, str(value)[:MAX_PARAM_LENGTH])

    def end(self, *, status: str = "FINISHED") -> None:
        if self._client is None or self.run_id is None or self._lost:
            return
        try:
            self._client.set_terminated(self.run_id, status=status)
        except Exception as exc:  # the run's outcome stands; only its record could not be closed
            log.warning("MLflow run %s could not be marked %s: %s", self.run_id, status, str(exc).splitlines()[0])
