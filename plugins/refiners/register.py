from mmgen.api import hookimpl


@hookimpl
def register_refiners(register):
    from .caption_refine import CaptionRefiner  # imported here: loading plugins must not import torch

    register(CaptionRefiner)
