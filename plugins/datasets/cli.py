"""`mmgen data`: ingest sources into LMDB stores, show a store, verify its checksums.

Only click is imported at module level, so `mmgen --help` stays fast.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import click

from .ingest.image_checks import DEFAULT_MAX_PIXELS

STORE = click.Path(exists=True, file_okay=False, path_type=Path)
max_pixels_option = click.option(
    "--max-pixels",
    type=int,
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Images with more pixels are skipped (decompression bombs).",
)


def _progress() -> bool:
    return not os.environ.get("MMGEN_NO_PROGRESS")


def _print_report(report) -> None:
    for line in report.lines():
        click.echo(line)


@click.group("data")
def data_group() -> None:
    """Build, inspect and check LMDB record stores."""


@data_group.group("ingest")
def ingest_group() -> None:
    """Ingest a source into a store; rerun the same command to resume after an interruption."""


@ingest_group.command("folder")
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--captions",
    "captions_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL (image, caption | captions, id) or CSV (image, caption, id).",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The store to write (a folder).")
@max_pixels_option
def ingest_folder(images: Path, captions_file: Path, out: Path, max_pixels: int) -> None:
    """A folder of IMAGES with a captions file."""
    from .ingest.folder import folder_candidates
    from .ingest.pipeline import ingest

    try:
        candidates = folder_candidates(images, captions_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(ingest(candidates, out, total=len(candidates), max_pixels=max_pixels, progress=_progress()))


@ingest_group.command("coco")
@click.option(
    "--annotations",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="COCO captions JSON (captions_train2014.json, ...).",
)
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path))
@max_pixels_option
def ingest_coco(annotations: Path, images: Path, out: Path, max_pixels: int) -> None:
    """COCO captions: an annotations JSON and its image folder."""
    import json

    from .ingest.coco import coco_candidates
    from .ingest.pipeline import ingest

    try:
        candidates = coco_candidates(annotations, images)
    except (json.JSONDecodeError, AttributeError) as exc:
        raise click.ClickException(f"{annotations}: not a COCO captions file ({exc})") from None
    _print_report(ingest(candidates, out, total=len(candidates), max_pixels=max_pixels, progress=_progress()))


@ingest_group.command("dataset")
@click.argument("name")
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Writes <out-dir>/<split>.lmdb per split.",
)
@click.option("--split", "splits", multiple=True, help="Only these splits (default: all).")
@click.option("--set", "options", multiple=True, metavar="KEY=VALUE", help="A dataset option, e.g. size=32.")
@max_pixels_option
def ingest_dataset(
    name: str, out_dir: Path, splits: tuple[str, ...], options: tuple[str, ...], max_pixels: int
) -> None:
    """A registered dataset plugin NAME (see `mmgen plugins`), e.g. shapes."""
    dataset = _build_dataset(name, options)
    from .ingest.dataset_source import dataset_candidates, split_size
    from .ingest.pipeline import ingest

    for split in splits or dataset.splits():
        if split not in dataset.splits():
            raise click.ClickException(f"dataset {name!r} has no split {split!r}; it has {list(dataset.splits())}")
        report = ingest(
            dataset_candidates(dataset, split),
            out_dir / f"{split}.lmdb",
            total=split_size(dataset, split),
            max_pixels=max_pixels,
            progress=_progress(),
        )
        _print_report(report)


def _build_dataset(name: str, options: tuple[str, ...]):
    import yaml

    from mmgen.api import ConfigError, structure
    from mmgen.api import PluginError, UnknownComponentError, load_registry

    try:
        registry = load_registry()
        cls = registry.get("datasets", name)
    except (PluginError, UnknownComponentError) as exc:
        raise click.ClickException(str(exc)) from None
    values = {}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise click.ClickException(f"--set {option!r}: expected KEY=VALUE")
        values[key.strip()] = yaml.safe_load(raw)
    try:
        config = structure(cls.Config, values, path=name, registry=registry)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return cls.from_config(config)


@data_group.command("show")
@click.argument("store", type=STORE)
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), help="Write a contact-sheet PNG here.")
@click.option("--count", default=16, show_default=True, help="Images on the sheet.")
@click.option("--columns", default=4, show_default=True)
@click.option("--tile", default=128, show_default=True, help="Tile side in pixels.")
def show(store: Path, sheet: Path | None, count: int, columns: int, tile: int) -> None:
    """Counts of STORE (records, captions, modalities, skipped / fixed items) and optionally a contact sheet."""
    from mmgen.api import atomic_write_bytes

    from .contact_sheet import contact_sheet
    from .ingest.pipeline import reason_counts
    from .lmdb_store import LmdbStore, StoreError

    try:
        reader = LmdbStore(store)
        header = reader.header
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{store}: schema {header['schema_version']}, checksum {header['checksum'][:16]}...")
    click.echo(f"records   {header['count']}")
    for modality, n in sorted(header["modalities"].items()):
        click.echo(f"  {modality:<8}{n}")
    click.echo(f"captions  {header['captions']}")
    click.echo(f"fixed     {header['issues'].get('fixed', 0)}")
    click.echo(f"skipped   {header['issues'].get('skipped', 0)}")
    skipped, fixed = reason_counts(reader)
    for title, reasons in (("skipped", skipped), ("fixed", fixed)):
        for reason, n in sorted(reasons.items()):
            click.echo(f"  {title}: {reason}: {n}")
    if sheet is not None:
        images = []
        for index in range(len(reader)):
            record = reader.record(index)
            if record.modality == "image":
                images.append(record)
            if len(images) == count:
                break
        if not images:
            raise click.ClickException(f"{store} holds no image records")
        buffer = io.BytesIO()
        contact_sheet(images, columns=columns, size=tile).save(buffer, format="PNG")
        atomic_write_bytes(sheet, buffer.getvalue())
        click.echo(f"contact sheet of {len(images)} images: {sheet}")


@data_group.command("verify")
@click.argument("stores", nargs=-1, required=True, type=STORE)
def verify(stores: tuple[Path, ...]) -> None:
    """Re-hash every record of each STORE and compare with its header; exit 1 on any mismatch."""
    from .lmdb_store import StoreError
    from .store_verify import verify_store

    failed = False
    for store in stores:
        try:
            report = verify_store(store)
        except StoreError as exc:
            click.echo(f"{store}: FAILED: {exc}")
            failed = True
            continue
        if report.ok:
            click.echo(f"{store}: ok ({report.records} records)")
        else:
            failed = True
            click.echo(f"{store}: FAILED")
            for problem in report.problems:
                click.echo(f"  {problem}")
    if failed:
        sys.exit(1)


def register_commands(cli: click.Group) -> None:
    cli.add_command(data_group)
