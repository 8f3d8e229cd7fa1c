"""Built-in samplers, registered like any third-party plugin."""

from mmgen.api import hookimpl


@hookimpl
def register_samplers(register):
    from .maskgit import MaskGitSampler

    register(MaskGitSampler)

    from .autoregressive import AutoregressiveSampler

    register(AutoregressiveSampler)

    from .answer_head import AnswerHeadSampler

    register(AnswerHeadSampler)
