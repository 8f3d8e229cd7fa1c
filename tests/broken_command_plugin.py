"""A plugin (loaded through MMGEN_PLUGINS in CLI tests) whose register_commands raises."""

from mmgen.api import hookimpl


@hookimpl
def register_commands(cli):
    raise RuntimeError("this plugin's command is broken")
