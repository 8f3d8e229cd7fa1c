"""Metrics plugin: the `fid` and `caption` metrics and the `mmgen eval` command. Imports happen inside the
hooks, so loading stays light."""

from mmgen.api import hookimpl


@hookimpl
def register_metrics(register):
    from .caption import CaptionScores
    from .fid import Fid

    register(Fid)
    register(CaptionScores)


@hookimpl
def register_commands(cli):
    from .eval_command import evaluate_command

    cli.add_command(evaluate_command)
