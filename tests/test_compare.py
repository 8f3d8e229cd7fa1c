"""`mmgen compare`: a sweep's table from a tiny MLflow store laid out as a sweep records it.

The store (one per module: a fresh SQLite store costs seconds) holds experiment "ablation" with an older
sweep parent and a newer one. The newer parent has two variants: "mask_only" (3 finished seeds) and "full"
(2 finished seeds and a failed one whose metrics must never be averaged). "full" runs were created first
but started later, so the table's order (mask_only, full) is the start order, not creation or name order.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
from click.testing import CliRunner
from mmgen.cli import main
from PIL import Image

I2T = "evaluate/one_sample/shapes_accuracy/i2t/accuracy"
T2I = "evaluate/one_sample/shapes_accuracy/t2i/accuracy"
BLEU = "evaluate/captions/bleu"  # logged by some seeds only
OBJECTIVES = "stages.train.objectives"
FILES = ["compare/compare-curve.png", "compare/compare.csv", "compare/compare.md", "compare/compare.png"]

# variant, seed, start time (ms), status, final metrics, train/loss at steps 1..4
CHILDREN = [
    ("full", "1", 2_010, "FINISHED", {I2T: 0.25, T2I: 0.5, BLEU: 0.5}, [4.0, 3.0, 2.0, 1.0]),
    ("full", "2", 2_011, "FINISHED", {I2T: 0.75, T2I: 0.5}, [4.0, 3.0, 2.0, 2.0]),
    ("full", "3", 2_012, "FAILED", {I2T: 0.0, T2I: 0.0}, [9.0]),
    ("mask_only", "1", 2_001, "FINISHED", {I2T: 0.5, T2I: 1.0, BLEU: 0.25}, [5.0, 4.0, 3.0, 2.0]),
    ("mask_only", "2", 2_002, "FINISHED", {I2T: 0.75, T2I: 1.0, BLEU: 0.75}, [5.0, 4.0, 3.0, 2.0]),
    ("mask_only", "3", 2_003, "FINISHED", {I2T: 1.0, T2I: 1.0, BLEU: 0.5}, [5.0, 4.0, 3.0, 2.0]),
]
OBJECTIVE_OF = {"mask_only": '["mask"]', "full": '["mask", "mixsel"]'}


def log_child(client, experiment_id: str, parent_id: str, child: tuple) -> str:
    from mlflow.entities import Metric

    variant, seed, start, status, finals, losses = child
    tags = {
        "mlflow.parentRunId": parent_id,
        "mmgen.sweep": "variant",
        "mmgen.variant": variant,
        "mmgen.seed": seed,
        "mmgen.variant.name": f"{variant}/seed={seed}",
        f"mmgen.sweep.key.{OBJECTIVES}": OBJECTIVE_OF[variant],
        "mmgen.sweep.key.seed": seed,  # varies within a variant: its seed axis, not a table column
    }
    if status == "FAILED":
        tags["mmgen.error"] = "train: loss is NaN at step 2"
    run_id = client.create_run(
        experiment_id, start_time=start, tags=tags, run_name=f"{variant}/seed={seed}"
    ).info.run_id
    metrics = [Metric("train/loss", loss, start + step, step) for step, loss in enumerate(losses, start=1)]
    metrics += [Metric(key, value, start + 100, 0) for key, value in finals.items()]
    metrics += [Metric("evaluate/seconds", 12.5, start + 100, 0)]
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, status=status)
    return run_id


def parent(client, experiment_id: str, start: int) -> str:
    tags = {"mmgen.sweep": "parent", "mmgen.recipe": "shapes", "mmgen.sweep.keys": json.dumps([OBJECTIVES, "seed"])}
    return client.create_run(experiment_id, start_time=start, tags=tags, run_name="shapes").info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("ablation", artifact_location=(folder / "artifacts").as_uri())
    old = parent(client, experiment_id, 1_000)
    log_child(client, experiment_id, old, ("mask_only", "1", 1_001, "FINISHED", {I2T: 0.125, T2I: 0.125}, [1.0]))
    new = parent(client, experiment_id, 2_000)
    for child in CHILDREN:
        log_child(client, experiment_id, new, child)
    plain = client.create_run(client.create_experiment("plain"), run_name="not a sweep").info.run_id
    return {"uri": uri, "client": client, "old": old, "new": new, "plain": plain}


def compare(store, out, *args: str):
    return CliRunner().invoke(main, ["compare", *args, "--tracking-uri", store["uri"], "--out", str(out)])


@pytest.fixture(scope="module")
def compared(store, tmp_path_factory):
    """The newest sweep compared once by its parent run id with the default metrics and curve."""
    out = tmp_path_factory.mktemp("compare")
    result = compare(store, out, store["new"])
    assert result.exit_code == 0, result.output
    return result, out


def read_csv(out) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "compare.csv").open(newline="") as handle:
        return {(row["variant"], row["metric"]): row for row in csv.DictReader(handle)}


def test_csv_has_mean_std_n_and_failed_per_variant_and_metric(compared):
    _, out = compared
    with (out / "compare.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["variant", OBJECTIVES, "metric", "mean", "std", "n", "failed", "values"]
    rows = read_csv(out)
    # The default metrics: the evaluate/ metrics every finished child has, without timings (evaluate/seconds).
    assert list(rows) == [("mask_only", I2T), ("mask_only", T2I), ("full", I2T), ("full", T2I)]
    mask_i2t = rows["mask_only", I2T]
    assert (float(mask_i2t["mean"]), float(mask_i2t["std"]), mask_i2t["n"], mask_i2t["failed"]) == (
        0.75,
        0.25,
        "3",
        "0",
    )
    assert json.loads(mask_i2t["values"]) == {"1": 0.5, "2": 0.75, "3": 1.0}
    assert mask_i2t[OBJECTIVES] == '["mask"]'
    full_i2t = rows["full", I2T]  # the failed seed's 0.0 is not averaged in
    assert (float(full_i2t["mean"]), full_i2t["n"], full_i2t["failed"]) == (0.5, "2", "1")
    assert float(full_i2t["std"]) == pytest.approx(math.sqrt(0.125), rel=1e-12)
    assert json.loads(full_i2t["values"]) == {"1": 0.25, "2": 0.75}
    assert (float(rows["full", T2I]["mean"]), float(rows["full", T2I]["std"])) == (0.5, 0.0)


def test_markdown_names_the_run_and_holds_the_table(compared, store):
    _, out = compared
    lines = (out / "compare.md").read_text().splitlines()
    assert lines[0] == f"Sweep parent run `{store['new']}` in experiment `ablation`: `mmgen compare {store['new']}`"
    table = [line for line in lines if line.startswith("|")]
    assert table == [
        f"| variant | `{OBJECTIVES}` | n | failed | `{I2T}` | `{T2I}` |",
        "|---|---|---:|---:|---:|---:|",
        '| mask_only | `["mask"]` | 3 | 0 | 0.7500 ± 0.25 | 1.000 ± 0 |',
        '| full | `["mask", "mixsel"]` | 2 | 1 | 0.5000 ± 0.35 | 0.5000 ± 0 |',
    ]
    assert "- full/seed=3 (failed): train: loss is NaN at step 2" in lines


def test_terminal_table_fits_100_columns(compared, store):
    result, out = compared
    lines = result.output.splitlines()
    assert lines[0] == f"sweep {store['new']} in experiment 'ablation': 6 runs"
    start = lines.index("metrics under evaluate/one_sample/shapes_accuracy/")
    assert lines[start + 1 : start + 4] == [
        "variant    n  failed   i2t/accuracy  t2i/accuracy",
        "mask_only  3       0  0.7500 ± 0.25     1.000 ± 0",
        "full       2       1  0.5000 ± 0.35    0.5000 ± 0",
    ]
    assert "  full/seed=3 (failed): train: loss is NaN at step 2" in lines
    assert f"wrote compare.csv, compare.md, compare.png, compare-curve.png to {out}/" in lines
    assert all(len(line) <= 100 for line in lines if not line.startswith(("logged to", "wrote")))


def test_pictures_are_written_and_every_file_is_logged_to_the_parent(compared, store):
    _, out = compared
    for name in ("compare.png", "compare-curve.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 300
    logged = sorted(item.path for item in store["client"].list_artifacts(store["new"], "compare"))
    assert logged == FILES


def test_an_experiment_name_means_its_newest_sweep(store, tmp_path):
    result = compare(store, tmp_path, "ablation")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"sweep {store['new']} in experiment 'ablation': 6 runs"
    first = (tmp_path / "compare.md").read_text().splitlines()[0]
    assert first == f"Sweep parent run `{store['new']}` in experiment `ablation`: `mmgen compare ablation`"


def test_metric_globs_choose_metrics_in_pattern_order(store, tmp_path):
    result = compare(store, tmp_path, store["new"], "--metric", "evaluate/captions/*", "--metric", "*/t2i/*")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path)
    assert list(rows) == [("mask_only", BLEU), ("mask_only", T2I), ("full", BLEU), ("full", T2I)]
    full_bleu = rows["full", BLEU]  # one of two finished seeds logged it: no std
    assert (full_bleu["mean"], full_bleu["std"], full_bleu["n"]) == ("0.5", "", "1")
    assert (
        '| full | `["mask", "mixsel"]` | 2 | 1 | 0.5000 ± - (n=1) | 0.5000 ± 0 |'
        in (tmp_path / "compare.md").read_text()
    )


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        (
            "0123456789abcdef0123456789abcdef",
            [],
            "error: '0123456789abcdef0123456789abcdef' is neither a run id nor an experiment name in {uri}",
        ),
        ("plain", [], "error: experiment 'plain' in {uri} has no sweep (no run tagged mmgen.sweep=parent)"),
        ("{plain}", [], "error: run {plain} has no child runs: give a sweep's parent run or its experiment's name"),
        (
            "{new}",
            ["--metric", "evaluate/nothing*"],
            "error: --metric 'evaluate/nothing*' matches no metric of a finished child; they have: ",
        ),
        (
            "{new}",
            ["--curve", "train/nothing"],
            "error: --curve 'train/nothing': no finished child logged it; they have: ",
        ),
    ],
)
def test_bad_targets_and_options_are_one_line_errors(store, tmp_path, target, args, message):
    result = compare(store, tmp_path, target.format(**store), *args)
    assert result.exit_code == 2
    assert result.output.startswith(message.format(**store)) and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_a_missing_local_store_is_named_not_created(tmp_path):
    database = tmp_path / "nowhere" / "mlflow.db"
    result = CliRunner().invoke(main, ["compare", "ablation", "--tracking-uri", f"sqlite:///{database}"])
    assert result.exit_code == 2
    assert result.output == f"error: no MLflow store at {database}: give --tracking-uri or set MLFLOW_TRACKING_URI\n"
    assert not database.parent.exists()
