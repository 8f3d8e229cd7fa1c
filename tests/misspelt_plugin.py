"""A plugin with a misspelt hook name (register_sampler, singular)."""

from mmgen import hookimpl


@hookimpl
def register_sampler(register):
    raise AssertionError("never called")
