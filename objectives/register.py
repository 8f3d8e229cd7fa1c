from mmgen.api import hookimpl


@hookimpl
def register_objectives(register):
    # Imported here: loading plugins must not import torch.
    from .mask import MaskPrediction
    from .mixsel import MixSel
    from .target_length import TargetLength
    from .unroll_mask import UnrollMask

    register(MaskPrediction)
    register(TargetLength)
    register(UnrollMask)
    register(MixSel)

    from .causal_lm import CausalLM

    register(CausalLM)

    from .in_context import InContextMask

    register(InContextMask)

    from .vqa_classify import VqaClassify

    register(VqaClassify)
