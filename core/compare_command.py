"""`mmgen compare PARENT_RUN_OR_EXPERIMENT`: a sweep's variants in one table, with mean, std and n over seeds.

The table is printed, written as compare.csv and compare.md with pictures beside them (compare.png, and
compare-curve.png where a curve was logged), and every file is logged to the sweep's parent run under
compare/, so the MLflow UI shows the comparison where the sweep is.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from . import compare as sweeps
from .compare_plot import plot_bars, plot_curves
from .compare_table import failures, markdown_lines, terminal_table, write_csv, write_markdown

ARTIFACT_FOLDER = "compare"
# The MLflow UI link opens the model-training view (MLflow 3 opens an experiment on GenAI traces otherwise).
UI_VIEW = "workflowType=machine_learning"


@click.command()
@click.argument("target", metavar="PARENT_RUN_OR_EXPERIMENT")
@click.option(
    "--metric",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="A metric to compare (repeatable; shell-style globs such as 'evaluate/*/accuracy'). "
    "Default: every evaluate/ metric all finished runs have.",
)
@click.option("--curve", metavar="METRIC", help="The metric drawn against steps per variant. Default: train/loss.")
@click.option("--tracking-uri", help="The MLflow store. Default: MLFLOW_TRACKING_URI, else mlflow.db here.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the files go. Default: compare/<parent run id>/ here.",
)
def compare(
    target: str, patterns: tuple[str, ...], curve: str | None, tracking_uri: str | None, out: Path | None
) -> None:
    """Compare the variants of a sweep: PARENT_RUN_OR_EXPERIMENT is the sweep's parent run id, or an
    experiment name for its newest sweep.

    Each variant's metrics (the last value each seed logged) as mean ± sample std over its finished seeds;
    failed seeds are counted, never averaged.
    """
    uri = sweeps.resolve_uri(tracking_uri)
    client = sweeps.open_client(uri)
    sweep = sweeps.load_sweep(client, target, uri=uri)
    metrics = sweeps.select_metrics(sweep, patterns)
    groups = sweeps.group_children(sweep, metrics)
    curve_metric = sweeps.choose_curve(sweep, curve)

    out = out or Path(ARTIFACT_FOLDER) / sweep.parent_id
    out.mkdir(parents=True, exist_ok=True)
    title = f"{sweep.experiment}: sweep {sweep.parent_id[:8]}"
    command = shlex.join(
        [
            "mmgen",
            "compare",
            target,
            *(x for p in patterns for x in ("--metric", p)),
            *(["--curve", curve] if curve else []),
        ]
    )
    files = [
        write_csv(out / "compare.csv", groups, metrics),
        write_markdown(out / "compare.md", markdown_lines(sweep, groups, metrics, command=command)),
        plot_bars(out / "compare.png", groups, metrics, title=title),
    ]
    if curve_metric is not None:
        curves = sweeps.load_curves(client, sweep, curve_metric)
        variants = [group.variant for group in groups]
        files.append(plot_curves(out / "compare-curve.png", curves, curve_metric, variants=variants, title=title))
    for path in files:
        client.log_artifact(sweep.parent_id, str(path), ARTIFACT_FOLDER)

    click.echo(f"sweep {sweep.parent_id} in experiment {sweep.experiment!r}: {len(sweep.children)} runs")
    click.echo("")
    for line in terminal_table(groups, metrics):
        click.echo(line)
    failed = failures(sweep)
    if failed:
        click.echo("")
        click.echo("failed:")
        for line in failed:
            click.echo(f"  {line}")
    running = sum(group.running for group in groups)
    if running:
        click.echo(f"\n{running} runs still running are not counted: compare again when they finish")
    click.echo("")
    click.echo(f"wrote {', '.join(path.name for path in files)} to {out}/")
    click.echo(f"logged to run {sweep.parent_id} under {ARTIFACT_FOLDER}/: {ui_hint(uri, sweep)}")


def ui_hint(uri: str, sweep: sweeps.Sweep) -> str:
    page = f"#/experiments/{sweep.experiment_id}/runs/{sweep.parent_id}/artifacts?{UI_VIEW}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    here = {"sqlite:///mlflow.db", f"sqlite:///{Path.cwd() / 'mlflow.db'}"}
    ui = "mlflow ui" if uri in here else f"mlflow ui --backend-store-uri {uri}"
    return f"open it with `{ui}`, at http://127.0.0.1:5000/{page}"
