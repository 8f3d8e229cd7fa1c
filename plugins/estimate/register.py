"""The `mmgen estimate` command: training memory per device on paper. Imports happen inside the hook."""

from mmgen.api import hookimpl


@hookimpl
def register_commands(cli):
    from .command import estimate_command

    cli.add_command(estimate_command)
