from mmgen.api import hookimpl


@hookimpl
def register_rerankers(register):
    from .cycle import CycleReranker  # imported here: loading plugins must not import torch

    register(CycleReranker)
