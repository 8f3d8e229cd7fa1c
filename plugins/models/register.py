from mmgen.api import hookimpl


@hookimpl
def register_models(register):
    from .magvlt import MagvltModel  # imported here: loading plugins must not import torch

    register(MagvltModel)

    from .argvlt import ArgvltModel

    register(ArgvltModel)
