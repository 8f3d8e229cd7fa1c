from mmgen.api import hookimpl


@hookimpl
def register_stages(register):
    # Imported here: loading plugins must not import torch.
    from .evaluate import EvaluateStage
    from .finetune import FinetuneStage
    from .generate import GenerateStage
    from .in_context_evaluate import InContextEvaluateStage
    from .in_context_finetune import InContextFinetuneStage
    from .train_model import TrainModelStage

    register(TrainModelStage)
    register(GenerateStage)
    register(EvaluateStage)
    register(FinetuneStage)
    register(InContextFinetuneStage)
    register(InContextEvaluateStage)
