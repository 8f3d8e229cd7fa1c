"""The `linear_schedule` sampler and the `distinct_outputs` metric, registered through the `mmgen` entry point.

Written against docs/plugins.md and the protocols in `mmgen.api` only. The
hooks import torch lazily (inside the hook bodies), so `mmgen --help` and
`mmgen plugins` stay fast.
"""

from __future__ import annotations

from mmgen.api import hookimpl


@hookimpl
def register_samplers(register):
    from .sampler import LinearScheduleSampler

    register(LinearScheduleSampler)


@hookimpl
def register_metrics(register):
    from .metric import DistinctOutputs

    register(DistinctOutputs)
