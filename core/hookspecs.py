"""Every hook a plugin may implement. Hooks are called with keyword arguments.

Each `register_<kind>(register)` hook receives a callback; call it once per class
you provide: `register(MyModel)`. The class needs `name`, a frozen attrs `Config`
and a classmethod `from_config(config, **deps)`. `deps` are keyword arguments,
the same for every component of a kind (DEPS below; docs/plugins.md says what
each is); accept `**deps` so that a dependency added later breaks nothing.
"""

from __future__ import annotations

import pluggy

PROJECT = "mmgen"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# What `from_config(config, **deps)` receives, by kind.
DEPS: dict[str, tuple[str, ...]] = {
    "tokenizers": (),
    "models": ("token_space", "tokenizers"),
    "objectives": ("token_space", "tokenizers"),
    "samplers": (),
    "tasks": (),
    "rerankers": ("model", "tokenizers", "inputs", "device"),
    "refiners": ("model", "tokenizers", "inputs", "device"),
    "datasets": (),
    "metrics": ("inputs", "device"),
    "trackers": (),
    "stages": (),
}


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
    """Add Sampler classes (fill a generation request)."""


@hookspec
def register_tasks(register):
    """Add generation task classes (build a request from prompts: t2i, i2t, ...)."""


@hookspec
def register_rerankers(register):
    """Add Reranker classes (score candidate outputs; the pipeline keeps each prompt's best)."""


@hookspec
def register_refiners(register):
    """Add Refiner classes (improve chosen outputs after sampling)."""


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
