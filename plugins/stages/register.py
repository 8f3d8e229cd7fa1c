from mmgen.api import hookimpl


@hookimpl
def register_stages(register):
    # Imported here: loading plugins must not import torch.
    from .evaluate import EvaluateStage
    from .finetune import FinetuneStage
    from .generate import GenerateStage
    from .train_model import TrainModelStage

    register(TrainModelStage)
    register(GenerateStage)
    register(EvaluateStage)
    register(FinetuneStage)
