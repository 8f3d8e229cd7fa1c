"""StageTracker: what a stage logs reaches the run's tracker under the stage's key, never twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmgen.stage_tracker import StageTracker


class Calls:
    """Every call, as (method, positional, keywords)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, method: str):
        return lambda *args, **kwargs: self.calls.append((method, args, kwargs))


def test_metric_and_param_names_are_under_the_stage_key_once():
    run = Calls()
    tracker = StageTracker(run, key="train")
    tracker.log_metrics({"loss": 1.5, "lr": 0.1, "train/parameters": 7.0, "trainer/x": 2.0}, step=3)
    tracker.log_params({"steps": 4})
    assert run.calls == [
        (
            "log_metrics",
            ({"train/loss": 1.5, "train/lr": 0.1, "train/parameters": 7.0, "train/trainer/x": 2.0},),
            {"step": 3},
        ),
        ("log_params", ({"train/steps": 4},), {}),
    ]


def test_nested_names_and_other_stages_keys_are_prefixed():
    run = Calls()
    StageTracker(run, key="cache").log_metrics({"test/records": 3})
    StageTracker(run, key="evaluate").log_metrics({"t2i/accuracy": 0.5, "evaluate": 1.0})
    StageTracker(run, key="tokenizers").log_metrics({"tokenizers/image/loss": 0.2})
    assert [call[1][0] for call in run.calls] == [
        {"cache/test/records": 3},
        {"evaluate/t2i/accuracy": 0.5, "evaluate": 1.0},
        {"tokenizers/image/loss": 0.2},
    ]


def test_files_are_kept_under_the_stage_key(tmp_path):
    run = Calls()
    tracker = StageTracker(run, key="generate")
    grid = np.zeros((2, 2, 3), dtype=np.uint8)
    tracker.log_artifact(tmp_path / "generations.jsonl")
    tracker.log_artifact(tmp_path / "weights.pt", artifact_path="model")
    tracker.log_artifact(tmp_path / "x", artifact_path="generate")
    tracker.log_text("hi", file_name="notes.txt")
    tracker.log_image(grid, file_name="grid-t2i.png")
    tracker.log_image(grid, file_name="samples/step-000002-t2i.png", key="samples/t2i", step=2)
    tracker.log_table({"key": ["a"]}, file_name="captions-i2t.json")
    assert [(method, kwargs) for method, _, kwargs in run.calls] == [
        ("log_artifact", {"artifact_path": "generate"}),
        ("log_artifact", {"artifact_path": "generate/model"}),
        ("log_artifact", {"artifact_path": "generate"}),
        ("log_text", {"file_name": "generate/notes.txt"}),
        # No series asked for: the tracker is called without `key` and `step`.
        ("log_image", {"file_name": "generate/grid-t2i.png"}),
        ("log_image", {"file_name": "generate/samples/step-000002-t2i.png", "key": "generate/samples/t2i", "step": 2}),
        ("log_table", {"file_name": "generate/captions-i2t.json"}),
    ]
    assert run.calls[0][1] == (Path(tmp_path / "generations.jsonl"),)
    assert run.calls[-1][1] == ({"key": ["a"]},)
