"""CLIP plugin: the `clip` training stage and the `clip_score` metric (the reranker is used by generation)."""

from mmgen.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .stage import ClipStage

    register(ClipStage)


@hookimpl
def register_metrics(register):
    from .metric import ClipScore

    register(ClipScore)
