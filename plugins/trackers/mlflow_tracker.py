"""MLflow tracking: one MLflow run per `mmgen run`, holding params, metrics and artefacts."""

from __future__ import annotations

import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Mapping

import attrs

from mmgen.api import TrackerUnavailable

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow rejects longer parameter values
PARAMS_PER_BATCH = 100


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
        self._uri = ""

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> MlflowTracker:
        return cls(experiment=config.experiment, tracking_uri=config.tracking_uri, check_timeout_s=config.check_timeout_s)

    def resolved_uri(self) -> str | None:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")

    def start(self, *, run_name: str, tags: Mapping[str, str] | None = None, parent_run_id: str | None = None) -> None:
        uri = self.resolved_uri()
        if uri:
            check_server(uri, timeout_s=self.check_timeout_s)
        import mlflow
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri) if uri else MlflowClient()
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
        run_tags = dict(tags or {})
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
        self._client, self.run_id = client, run.info.run_id
        self._uri = uri or mlflow.get_tracking_uri()
        log.info("MLflow run %s in experiment %r (%s)", self.run_id, self.experiment, self._uri)

    def location(self) -> str | None:
        """Where a person finds the run: its id, experiment, and the command that shows it."""
        if self.run_id is None:
            return None
        here = {"sqlite:///mlflow.db", f"sqlite:///{Path.cwd() / 'mlflow.db'}"}
        ui = "mlflow ui" if self._uri in here else f"mlflow ui --backend-store-uri {self._uri}"
        if self._uri.startswith(("http://", "https://")):
            ui = self._uri
        return f"MLflow run {self.run_id} in experiment {self.experiment!r}: open it with `{ui}`"

    def child(self) -> MlflowTracker:
        """A tracker for a child run (sweeps): call `start(..., parent_run_id=self.run_id)`."""
        return MlflowTracker(experiment=self.experiment, tracking_uri=self.tracking_uri, check_timeout_s=self.check_timeout_s)

    def _require(self) -> Any:
        if self._client is None:
            raise RuntimeError("MlflowTracker used before start()")
        return self._client

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        client = self._require()
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=items[i : i + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        from mlflow.entities import Metric

        import time

        client = self._require()
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None:
        path = Path(path)
        client = self._require()
        if path.is_dir():
            client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, *, file_name: str) -> None:
        self._require().log_text(self.run_id, text, file_name)

    def log_image(self, image: Any, *, file_name: str) -> None:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(file_name).name
            target.write_bytes(buffer.getvalue())
            parent = str(Path(file_name).parent)
            self._require().log_artifact(self.run_id, str(target), None if parent == "." else parent)

    def end(self, *, status: str = "FINISHED") -> None:
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)
