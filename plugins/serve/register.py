"""Serve plugin: the `mmgen serve` command. Its imports (FastAPI, torch) happen when the command runs, so
`mmgen --help` stays fast and works without the `serve` extra."""

from mmgen.api import hookimpl


@hookimpl
def register_commands(cli):
    from .command import serve

    cli.add_command(serve)
