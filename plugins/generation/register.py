"""Generation plugin: the `generate` and `evaluate` stages and the `mmgen generate` command."""

from mmgen.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .stages import EvaluateStage, GenerateStage

    register(GenerateStage)
    register(EvaluateStage)


@hookimpl
def register_commands(cli):
    from .cli import register_commands as add

    add(cli)
