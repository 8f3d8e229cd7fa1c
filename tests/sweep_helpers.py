"""Tiny sweep recipes for tests/test_sweep.py, and a sweep read back from its state folder and MLflow.

Every recipe is the same tiny pipeline (32-pixel shapes, 2 training steps, 4 prompts) in one workdir and one
SQLite store, so sweeps of different tests share their data, tokenizer and cache folders (and often every
stage): only what a test varies is computed again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

MASK = [{"use": "mask"}]
WITH_LENGTH = [{"use": "mask"}, {"use": "target_length", "weight": 0.01}]
SEED_KEYS = ["stages.train.trainer.seed", "stages.generate.seed"]
OBJECTIVES = "stages.train.objectives"


def tiny_recipe(name: str, *, root: Path) -> dict[str, Any]:
    """The recipe without its sweep: artefacts in `root`/runs, MLflow in `root`/mlflow.db, experiment `name`."""
    return {
        "name": name,
        "device": "cpu",
        "workdir": str(root / "runs"),
        "tracker": {"use": "mlflow", "experiment": name, "tracking_uri": store_uri(root)},
        "stages": {
            "data": {
                "dataset": {
                    "use": "shapes",
                    "size": 32,
                    "max_objects": 1,
                    "train": 8,
                    "val": 4,
                    "test": 4,
                    "holdout": 0,
                }
            },
            "tokenizers": {
                "tokenizers": [
                    {"use": "vqgan", "preset": "tiny", "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1}},
                    {"use": "sentencepiece_bpe", "vocab_size": 64, "max_length": 16},
                ]
            },
            "cache": {},
            "train": {
                "model": {"use": "magvlt", "preset": "tiny"},
                "trainer": {"steps": 2, "batch_size": 4, "warmup_steps": 1},
            },
            "generate": {
                "tasks": ["t2i", "i2t"],
                "prompts": 4,
                "sampler": {"use": "maskgit", "fixed": {"steps": 2}, "variable": {"steps": 2}},
            },
            "evaluate": {"metrics": [{"use": "shapes_accuracy"}]},
        },
    }


def write_sweep(root: Path, name: str, sweep: Any) -> Path:
    """`root`/`name`.yaml: the tiny recipe with the `sweep` section."""
    data = {**tiny_recipe(name, root=root), "sweep": sweep}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def store_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "sweep.json").read_text())


def record_file(folder: Path, name: str) -> Path:
    return folder / "variants" / f"{name.replace('/', '__')}.json"


def record(folder: Path, name: str) -> dict[str, Any]:
    return json.loads(record_file(folder, name).read_text())


def children(root: Path, parent_id: str) -> dict[str, Any]:
    """The parent's child runs in MLflow, by their variant's full name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(root))
    parent = client.get_run(parent_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=100
    )
    return {run.data.tags["mmgen.variant.name"]: run for run in runs}


def parent_run(root: Path, parent_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri(root)).get_run(parent_id)
