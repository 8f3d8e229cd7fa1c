"""Metrics plugin: the `fid`, `caption` and `vqa_accuracy` metrics and the `mmgen eval` command. Imports happen
inside the hooks, so loading stays light."""

from mmgen.api import hookimpl


@hookimpl
def register_metrics(register):
    from .caption import CaptionScores
    from .fid import Fid
    from .vqa_accuracy import VqaAccuracy

    register(Fid)
    register(CaptionScores)
    register(VqaAccuracy)


@hookimpl
def register_commands(cli):
    from .eval_command import evaluate_command

    cli.add_command(evaluate_command)
