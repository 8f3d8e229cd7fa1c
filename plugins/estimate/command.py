"""`mmgen estimate RECIPE`: memory per device of each trainable stage, for one device, DDP and FSDP2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

COLUMNS = ("parameters", "gradients", "optimizer", "communication", "activations", "total")
HEADERS = ("params", "grads", "AdamW", "comm", "activations", "total")
STRATEGY_NAMES = {"single": "1 device", "ddp": "DDP", "fsdp": "FSDP2"}


@click.command("estimate")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value.")
@click.option("--devices", type=click.IntRange(min=1), default=8, show_default=True, help="Devices for DDP and FSDP2.")
@click.option(
    "--device",
    type=click.Choice(["cuda", "cpu"]),
    default="cuda",
    show_default=True,
    help="What trains: sets the attention kernel and, with precision auto, bf16 (cuda) or fp32 (cpu).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def estimate_command(recipe: Path, overrides: tuple[str, ...], devices: int, device: str, as_json: bool) -> None:
    """Memory per device of training each trainable stage of RECIPE, on paper (no data, no weights).

    Per stage: parameters, gradients, AdamW states, what DDP / FSDP2 gather, and activations per
    micro-batch, for one device and for DDP and FSDP2 on --devices, without and with activation
    checkpointing. The arithmetic and its assumptions: mmgen/memory_estimate.py.
    """
    from mmgen.api import UserError, estimate_memory_all, load_recipe, load_registry

    from .shapes import training_shapes

    registry = load_registry()
    loaded = load_recipe(recipe, registry=registry, overrides=overrides)
    shapes = training_shapes(loaded, registry=registry, device=device)
    reports = []
    for shape in shapes:
        try:
            rows = estimate_memory_all(shape, devices=devices, device=device)
        except ValueError as exc:
            raise UserError(f"estimate: {exc}") from None
        reports.append((shape, rows))
    if as_json:
        click.echo(json.dumps([report_data(shape, rows, device) for shape, rows in reports], indent=2))
        return
    for index, (shape, rows) in enumerate(reports):
        if index:
            click.echo("")
        for line in report_lines(shape, rows, device):
            click.echo(line)


def report_data(shape: Any, rows: list[Any], device: str) -> dict[str, Any]:
    import attrs

    data = attrs.asdict(shape)
    data["device"] = device
    data["rows"] = [attrs.asdict(row) for row in rows]
    return data


def report_lines(shape: Any, rows: list[Any], device: str) -> list[str]:
    """One stage's table, in GiB when its largest total reaches 1 GiB, else MiB."""
    unit, scale = ("GiB", 1024**3) if max(r.total for r in rows) >= 1024**3 else ("MiB", 1024**2)
    precision = "bf16 autocast" if shape.precision == "bf16" else "fp32"
    lines = [
        f"{shape.stage}: {shape.model}; {device}, {precision}",
        f"  parameters {shape.parameters:,} ({shape.trainable:,} trainable); batch {shape.batch_size}"
        f", grad_accum {shape.grad_accum}{', EMA' if shape.ema else ''}",
        "",
        f"  {'strategy':<9}{'devices':>8} {'checkpointing':>14}{'micro-batch':>12}"
        + "".join(f"{h:>13}" for h in HEADERS)
        + f"  ({unit} per device)",
    ]
    for row in rows:
        values = "".join(f"{getattr(row, c) / scale:>13.2f}" for c in COLUMNS)
        checkpointing = "yes" if row.checkpointing else "no"
        strategy = STRATEGY_NAMES[row.strategy]
        lines.append(f"  {strategy:<9}{row.devices:>8} {checkpointing:>14}{row.micro_batch:>12}{values}")
    lines.append("")
    lines += [f"  note: {note}" for note in shape.notes]
    return lines
