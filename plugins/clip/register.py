"""CLIP plugin: the `clip` training stage, the `clip` reranker and the `clip_score` metric."""

from mmgen.api import hookimpl


@hookimpl
def register_stages(register):
    from .stage import ClipStage

    register(ClipStage)


@hookimpl
def register_rerankers(register):
    from .reranker import ClipReranker

    register(ClipReranker)


@hookimpl
def register_metrics(register):
    from .metric import ClipScore

    register(ClipScore)
