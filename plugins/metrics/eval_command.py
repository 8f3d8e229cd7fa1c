"""`mmgen eval`: metrics over a run's generations, or over a folder `mmgen generate` wrote.

It runs the evaluate stage's own `evaluate` and `write_metrics`, so the keys, values and table are the
stage's. Only click is imported at module level, so `mmgen --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

GENERATIONS_FILE = "generations.jsonl"
PROTOCOLS_FILE = "protocols.json"  # a generate stage's folder: one folder of generations per protocol
GENERATE_STAGE = "generate"  # the key recipes give the generate stage


def generations_folder(target: Path) -> tuple[Path, Path | None]:
    """The folder of generations TARGET names, and the run workdir it belongs to (None for a bare folder)."""
    from mmgen.api import UserError, newest_finished, verify_stage_folder

    if not target.is_dir():
        raise UserError(f"mmgen eval: no folder {str(target)!r}")
    if (target / GENERATIONS_FILE).is_file() or (target / PROTOCOLS_FILE).is_file():
        if (target / "DONE.json").is_file():  # a generate stage's folder: read only what its hashes vouch for
            verify_stage_folder(target)
        return target, None
    if (target / "artefacts").is_dir():
        folder = newest_finished(target, GENERATE_STAGE)
        verify_stage_folder(folder)
        return folder, target
    raise UserError(
        f"mmgen eval: {target} is neither a run workdir (it has no artefacts/) "
        f"nor a folder of generations (it has no {GENERATIONS_FILE})"
    )


def metric_specs(names: tuple[str, ...], overrides: tuple[str, ...], *, registry: Any) -> list[Any]:
    """The --metric names with their --set options (`fid.extractor=pixels`), structured as the recipe would."""
    from mmgen.api import UserError, parse_override, structure_spec

    options: dict[str, dict[str, Any]] = {name: {} for name in names}
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in options or len(parts) < 2:
            raise UserError(f"mmgen eval: --set {text}: paths start with a --metric name ({', '.join(options)})")
        node = options[parts[0]]
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return [
        structure_spec("metrics", {"use": name, **data}, path=name, registry=registry) for name, data in options.items()
    ]


def stage_inputs(specs: list[Any], stages: tuple[str, ...], run_dir: Path | None, *, registry: Any, device: str) -> Any:
    """The stage folders the metrics declare: `--stage KEY=DIR`, else the run's newest finished one.

    A declared stage that neither gives is left out: a metric that needs it says so when it does.
    """
    from mmgen.api import ArtefactError, StageInputs, UserError, declared_inputs, newest_finished, verify_stage_folder

    folders: dict[str, Path] = {}
    for text in stages:
        key, sep, path = text.partition("=")
        if not sep or not key or not path:
            raise UserError(
                f"mmgen eval: --stage {text!r}: expected KEY=DIR, e.g. data=runs/shapes/artefacts/data-1a2b"
            )
        folders[key] = Path(path)
    for spec in specs:
        for _, key in declared_inputs(spec):
            if key not in folders and run_dir is not None:
                try:
                    folders[key] = newest_finished(run_dir, key)
                except ArtefactError:
                    pass
    uses = {key: verify_stage_folder(folder)["use"] for key, folder in folders.items()}
    return StageInputs(folders, uses=uses, registry=registry, device=device, reader="mmgen eval")


@click.command("eval")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--metric", "metrics", multiple=True, required=True, help="A registered metric (repeatable).")
@click.option(
    "--set", "overrides", multiple=True, metavar="METRIC.OPTION=VALUE", help="e.g. fid.extractor=pixels (repeatable)."
)
@click.option(
    "--stage", "stages", multiple=True, metavar="KEY=DIR", help="A finished stage folder a metric reads, e.g. data=DIR."
)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--tracker", "tracker_name", default="none", show_default=True, help="A registered tracker (mlflow, none)."
)
@click.option("--experiment", default="eval", show_default=True, help="MLflow experiment of the run.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The metrics JSON to write.")
def evaluate_command(
    target: Path,
    metrics: tuple[str, ...],
    overrides: tuple[str, ...],
    stages: tuple[str, ...],
    device: str,
    tracker_name: str,
    experiment: str,
    out: Path | None,
) -> None:
    """Metrics over TARGET's generations: a run workdir (its newest finished generate stage) or a folder of
    generations (what `mmgen generate` or the generate stage wrote). Prints the table, writes the JSON
    (default evaluations/<folder>.json) and, with --tracker mlflow, logs both."""
    from mmgen.api import ConfigError, UserError, load_registry, load_generations, structure_spec
    from mmgen.plugins.stages.evaluate import evaluate, evaluate_protocols, metrics_table, write_metrics
    from mmgen.plugins.stages.protocol_runs import load_protocol_runs

    registry = load_registry()
    folder, run_dir = generations_folder(target)
    try:
        specs = metric_specs(tuple(dict.fromkeys(metrics)), overrides, registry=registry)
        tracker_data = (
            {"use": tracker_name, "experiment": experiment} if tracker_name == "mlflow" else {"use": tracker_name}
        )
        tracker = registry.build(structure_spec("trackers", tracker_data, path="--tracker", registry=registry))
    except ConfigError as exc:
        raise UserError(f"mmgen eval: {str(exc).replace('<root>: ', '')}") from None
    inputs = stage_inputs(specs, stages, run_dir, registry=registry, device=device)
    # A generate stage's folder holds one set of generations per protocol: each is evaluated, keys prefixed.
    runs = load_protocol_runs(folder) if (folder / PROTOCOLS_FILE).is_file() else None
    generations = load_generations(folder) if runs is None else None
    out = out or Path("evaluations") / f"{folder.name}.json"
    tracker.start(run_name=f"eval-{folder.name}", tags={"mmgen.command": "eval"})
    status = "FAILED"
    try:
        tracker.log_params(
            {
                "generations": str(folder),
                "metrics": ",".join(s.use for s in specs),
                **dict(text.split("=", 1) for text in overrides),
            }
        )
        if runs is None:
            results = evaluate(generations, specs, registry=registry, inputs=inputs, device=device)
        else:
            results = evaluate_protocols(runs, specs, registry=registry, inputs=inputs, device=device)
        write_metrics(results, out, tracker=tracker)
        status = "FINISHED"
    finally:
        tracker.end(status=status)
    for line in metrics_table(results) or ["(no generation the metrics judge)"]:
        click.echo(line)
    click.echo(f"wrote {out}")
