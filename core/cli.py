"""The `mmgen` command line. Plugins load when a command runs, not on import.

Heavy modules (torch, mlflow) are imported inside commands, so `mmgen --help`
stays fast and works even when a plugin is broken.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from .errors import UserError
from .version import __version__

log = logging.getLogger("mmgen")


def _registry(*, report: bool = True):
    from .registry import load_registry

    registry = load_registry()
    if report:
        for failure in registry.failures:
            click.echo(f"warning: plugin {failure.plugin} skipped: {failure.error}", err=True)
    return registry


class PluginGroup(click.Group):
    """A click group that adds plugin commands (`register_commands`) on first use."""

    _loaded = False

    def _load_plugin_commands(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from .registry import TRACE_ENV, PluginError, is_strict, load_plugins

        if os.environ.get(TRACE_ENV):  # commands load before `main` sets up logging
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            manager, _, _ = load_plugins()
        except PluginError as exc:
            click.echo(f"warning: plugins not loaded: {exc}", err=True)
            return
        # One plugin's broken command must not take `mmgen --help` and every other command down.
        for impl in manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=self)
            except Exception as exc:
                if is_strict():
                    raise
                click.echo(
                    f"warning: plugin {impl.plugin_name} added no commands: {type(exc).__name__}: {exc}", err=True
                )

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None:
            self._load_plugin_commands()
            command = super().get_command(ctx, name)
        return command

    def invoke(self, ctx: click.Context) -> object:
        """Every command's user errors (a bad recipe, a missing artefact): one line, exit status 2; -v adds the traceback."""
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if ctx.params.get("verbose"):
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third-party chatter stays at WARNING unless -vv.
    for noisy in ("mlflow", "alembic", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="mmgen")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output; no progress bars.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int) -> None:
    """mmgen: unified multimodal generation with MAGVLT and friends.

    Run an experiment with `mmgen run recipe.yaml`; results go to MLflow (`mlflow ui`).
    """
    _setup_logging(verbose, quiet)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet > 0
    if quiet:
        import os

        os.environ.setdefault("MMGEN_NO_PROGRESS", "1")


@main.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe value.")
@click.option("--force", is_flag=True, help="Redo every stage even if its artefacts are done.")
@click.option("--dry-run", is_flag=True, help="Check the recipe and print it resolved; run nothing.")
@click.option(
    "--reuse",
    "reused",
    multiple=True,
    metavar="STAGE=DIR",
    help="Take a finished stage folder from elsewhere (e.g. shipped checkpoints) as that stage's output.",
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Sweep variants at once (local)."
)
@click.option(
    "--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Where variants run."
)
@click.option(
    "--ray-address", metavar="ADDRESS", help="Ray cluster for --backend ray (default: RAY_ADDRESS, else local)."
)
@click.option("--gpus", type=click.FloatRange(min=0), default=0.0, help="GPUs each variant asks Ray for.")
def run(
    recipe: Path,
    overrides: tuple[str, ...],
    force: bool,
    dry_run: bool,
    reused: tuple[str, ...],
    jobs: int,
    backend: str,
    ray_address: str | None,
    gpus: float,
) -> None:
    """Run RECIPE: its stages in order, tracked as one MLflow run.

    A recipe with a `sweep:` section runs each of its variants as a child run of one parent run
    (docs/sweeps.md); running it again skips the variants that finished.
    """
    import yaml

    from .recipe import load_recipe, read_yaml
    from .runner import check_reuse
    from .sweep import has_sweep

    # Every check before any work: a bad recipe or --reuse stops here, before a tracker run opens.
    registry = _registry()
    if has_sweep(read_yaml(recipe)):
        if reused or force:
            raise click.UsageError("--reuse and --force are for one recipe, not a sweep")
        options = dict(jobs=jobs, backend=backend, ray_address=ray_address, gpus=gpus)
        return _run_sweep(recipe, overrides, dry_run=dry_run, registry=registry, **options)
    loaded = load_recipe(recipe, registry=registry, overrides=overrides)
    reuse = dict(_key_path(text) for text in reused)
    check_reuse(loaded, reuse)
    if dry_run:
        click.echo(yaml.safe_dump(loaded.to_data(), sort_keys=False), nl=False)
        return
    from .runner import run_recipe

    tracker = registry.build(loaded.header.tracker)
    results = run_recipe(loaded, registry=registry, force=force, tracker=tracker, reuse=reuse)
    for line in run_summary(results, registry=registry, tracker=tracker):
        click.echo(line)


def _run_sweep(recipe: Path, overrides: tuple[str, ...], *, dry_run: bool, registry: Any, **options: Any) -> None:
    from .sweep import load_sweep
    from .sweep_runner import describe, run_sweep, summary

    sweep = load_sweep(recipe, registry=registry, overrides=overrides)
    if dry_run:
        for line in describe(sweep, registry=registry):
            click.echo(line)
        return
    outcome = run_sweep(sweep, registry=registry, **options)
    for line in summary(outcome):
        click.echo(line)
    compare = sweep.definition.get("compare")
    if compare is not None and outcome.parent_run_id and outcome.store and len(outcome.failed) < len(outcome.records):
        from .compare_command import compare as compare_command

        click.echo("")
        click.get_current_context().invoke(
            compare_command,
            target=outcome.parent_run_id,
            patterns=tuple(compare.get("metrics", ())),
            curve=compare.get("curve"),
            tracking_uri=outcome.store,
            out=outcome.state_dir / "compare",
        )
    if outcome.failed:
        sys.exit(1)


def _key_path(text: str) -> tuple[str, Path]:
    from .recipe import RecipeError

    key, sep, path = text.partition("=")
    if not sep or not key or not path:
        raise RecipeError(f"--reuse {text!r}: expected STAGE=DIR")
    return key, Path(path)


def run_summary(results: list, *, registry, tracker) -> list[str]:
    """Seconds per stage, each stage's own summary (metrics, grids), and where the tracked run is."""
    width = max([12, *(len(r.key) + 1 for r in results)])
    lines = ["", f"{'stage':<{width}} seconds  folder"]
    for result in results:
        state = "reused" if result.reused else "cached" if result.cached else f"{result.seconds:.1f}"
        lines.append(f"{result.key:<{width}} {state:>7}  {result.out_dir}")
    lines.append(f"{'total':<{width}} {sum(r.seconds for r in results if not r.cached):>7.1f}")
    for result in results:
        summary = getattr(registry.get("stages", result.use), "summary", None)
        found = summary(result.out_dir) if summary is not None else []
        if found:
            lines += ["", f"{result.key}:", *(f"  {line}" for line in found)]
    where = getattr(tracker, "location", None)
    if where is not None and where():
        lines += ["", where()]
    return lines


@main.command()
def plugins() -> None:
    """List every registered component by kind, with the package that provides it."""
    from .registry import KINDS

    registry = _registry(report=False)
    for kind in KINDS:
        click.echo(f"{kind}:")
        entries = registry.entries(kind)
        if not entries:
            click.echo("  (none)")
        for entry in entries:
            line = f"  {entry.name:<20} {entry.provider.package} {entry.provider.version}  [{entry.provider.plugin}]"
            summary = getattr(entry.cls, "summary", None)  # generation tasks say what they do
            click.echo(f"{line}  {summary}" if isinstance(summary, str) else line)
    for failure in registry.failures:
        click.echo(f"failed: {failure.plugin}: {failure.error}")


def _add_core_commands() -> None:
    from .compare_command import compare
    from .generate_command import generate
    from .verify_command import verify

    main.add_command(compare)
    main.add_command(generate)
    main.add_command(verify)


_add_core_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
