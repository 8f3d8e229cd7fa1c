from mmgen.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .train_model import TrainModelStage  # imported here: loading plugins must not import torch

    register(TrainModelStage)
