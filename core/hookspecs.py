"""Every hook a plugin may implement. Hooks are called with keyword arguments.

Each `register_<kind>(register)` hook receives a callback; call it once per class
you provide: `register(MyModel)`. The class needs `name`, a frozen attrs `Config`
and `from_config(config, **deps)`.
"""

from __future__ import annotations

import pluggy

PROJECT = "mmgen"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_tokenizers(register):
    """Add Tokenizer classes (one modality each)."""


@hookspec
def register_models(register):
    """Add Model classes."""


@hookspec
def register_objectives(register):
    """Add Objective classes (training losses)."""


@hookspec
def register_samplers(register):
    """Add Sampler classes (generation algorithms)."""


@hookspec
def register_datasets(register):
    """Add Dataset classes (record sources)."""


@hookspec
def register_metrics(register):
    """Add Metric classes (evaluation)."""


@hookspec
def register_trackers(register):
    """Add Tracker classes (experiment tracking back ends)."""


@hookspec
def register_stages(register):
    """Add Stage classes (recipe steps: data, tokenizers, train, generate, evaluate, ...)."""


@hookspec
def register_commands(cli):
    """Add click commands or groups to the `mmgen` CLI: `cli.add_command(...)`."""
