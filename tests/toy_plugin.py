"""A plugin module loaded through MMGEN_PLUGINS in CLI tests."""

from registry_helpers import ToyObjective, ToySampler, ToyStage

from mmgen import hookimpl


@hookimpl
def register_samplers(register):
    register(ToySampler)


@hookimpl
def register_objectives(register):
    register(ToyObjective)


@hookimpl
def register_stages(register):
    register(ToyStage)
