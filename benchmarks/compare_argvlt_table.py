"""The MAGVLT vs ARGVLT table of a `recipes/compare_argvlt.yaml` run, as Markdown (and JSON).

Reads the run's finished stage folders: each model's training (updates from the recipe,
wall seconds from its DONE record), the four evaluate stages (one sample / best of 8 by
CLIP, for each model) and, when present, benchmarks/results/argvlt_vs_magvlt_speed.json.

    python benchmarks/compare_argvlt_table.py --run runs --out benchmarks/results \
        --mlflow-run RUN_ID --tracking-uri sqlite:///mlflow.db

With `--mlflow-run`, the table and the sampling speeds are added to the recipe's MLflow run
(the one `mmgen run` printed), beside the metrics its stages logged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmgen.atomic import atomic_write_text
from mmgen.recipe import read_yaml
from mmgen.stage_folder import newest_finished, verify

MODELS = ("magvlt", "argvlt")
PROTOCOLS = (("one", "one sample"), ("clip", "best of 8 by CLIP"))
# The protocol each evaluate stage's table is read from (its metrics.json keys: `<protocol>/<metric>/...`).
PROTOCOL_KEYS = {"one": "one_sample", "clip": "clip"}
ROWS = [
    ("T2I Shapes all-correct", "shapes_accuracy/t2i/accuracy", "{:.3f}"),
    ("T2I one-object / two-object", ("shapes_accuracy/t2i/objects_1", "shapes_accuracy/t2i/objects_2"), "{:.2f} / {:.2f}"),
    ("I2T Shapes all-correct", "shapes_accuracy/i2t/accuracy", "{:.3f}"),
    ("I2T CIDEr-D", "caption/i2t/cider_d", "{:.3f}"),
    ("I2T BLEU-4", "caption/i2t/bleu_4", "{:.3f}"),
    ("T2I FID (Inception, 128 vs 128 pictures)", "fid/t2i/fid_inception", "{:.1f}"),
    ("CLIP score T2I / I2T", ("clip_score/t2i", "clip_score/i2t"), "{:.1f} / {:.1f}"),
]


def protocol_metrics(written: dict[str, float], protocol: str) -> dict[str, float]:
    """One protocol's metrics, its prefix dropped; an evaluate stage's from before protocols has no prefix."""
    prefix = f"{protocol}/"
    return {k.removeprefix(prefix): v for k, v in written.items() if k.startswith(prefix)} or written


def cell(metrics: dict[str, float], keys, form: str) -> str:
    keys = (keys,) if isinstance(keys, str) else keys
    if any(k not in metrics for k in keys):
        return "-"
    return form.format(*(metrics[k] for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs"))
    parser.add_argument("--recipe", type=Path, default=Path("recipes/compare_argvlt.yaml"))
    parser.add_argument("--speed", type=Path, default=Path("benchmarks/results/argvlt_vs_magvlt_speed.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--mlflow-run", default=None, help="the compare_argvlt run's MLflow run id")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    args = parser.parse_args()
    stages = read_yaml(args.recipe)["stages"]
    metrics, training = {}, {}
    for model in MODELS:
        done = verify(newest_finished(args.run, model))
        trainer = stages[model]["trainer"]
        training[model] = {"updates": trainer["steps"], "batch_size": trainer["batch_size"], "seconds": done["seconds"]}
        for protocol, _ in PROTOCOLS:
            folder = newest_finished(args.run, f"{model}_{protocol}_eval")
            verify(folder)
            written = json.loads((folder / "metrics.json").read_text())
            metrics[(model, protocol)] = protocol_metrics(written, PROTOCOL_KEYS[protocol])
    header = "| | " + " | ".join(f"{m.upper()} {label}" for m in MODELS for _, label in PROTOCOLS) + " |"
    lines = [header, "|---|" + "---|" * (len(MODELS) * len(PROTOCOLS))]
    for title, keys, form in ROWS:
        cells = [cell(metrics[(m, p)], keys, form) for m in MODELS for p, _ in PROTOCOLS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "| training | updates x batch | wall seconds |", "|---|---|---|"]
    for model in MODELS:
        t = training[model]
        lines.append(f"| {model.upper()} | {t['updates']} x {t['batch_size']} | {t['seconds']:.0f} |")
    if args.speed.is_file():
        speed = json.loads(args.speed.read_text())
        by = {(r["model"], r["task"]): r for r in speed["rows"]}
        lines += ["", "| seconds per sample | MAGVLT | ARGVLT | ARGVLT / MAGVLT |", "|---|---|---|---|"]
        for task in ("t2i", "i2t"):
            for column, batch in (("batch_1_s", 1), ("batch_32_s", 32)):
                mag, ar = by[("magvlt", task)][column], by[("argvlt", task)][column]
                lines.append(f"| {task.upper()}, batch {batch} | {mag:.4f} | {ar:.4f} | {ar / mag:.2f} |")
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "compare_argvlt.md", table)
    data = {"training": training, "metrics": {f"{m}_{p}": v for (m, p), v in metrics.items()}}
    atomic_write_text(args.out / "compare_argvlt.json", json.dumps(data, indent=2))
    if args.mlflow_run:
        log_to_run(args.mlflow_run, args.tracking_uri, table_file=args.out / "compare_argvlt.md", speed=args.speed)
    print(table)


def log_to_run(run_id: str, uri: str, *, table_file: Path, speed: Path) -> None:
    """The table as an artefact and each speed as a metric `speed/<model>/<task>/batch_<n>_s` of the run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.log_artifact(run_id, str(table_file), "compare")
    if speed.is_file():
        for row in json.loads(speed.read_text())["rows"]:
            for column in ("batch_1_s", "batch_32_s"):
                client.log_metric(run_id, f"speed/{row['model']}/{row['task']}/{column}", row[column])


if __name__ == "__main__":
    main()
