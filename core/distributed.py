"""Process groups, parameter sharding and gradient averaging for torchrun jobs.

Launch with `torchrun --nproc-per-node N ...`: RANK, WORLD_SIZE and LOCAL_RANK
come from the environment. gloo on CPU, NCCL on GPU.

Data parallel ("ddp") does NOT wrap the module in DistributedDataParallel. Our
objectives call model methods besides forward (`model.logits`,
`model.length_logits`, two forward passes for UnrollMask), and DDP only syncs
gradients correctly for what runs through its wrapper's forward. Instead every
rank computes its gradients on the plain module and `average_gradients`
all-reduces them after the last backward of the step: the mean of the ranks'
gradients of their mean losses, exactly what DDP computes, for any call
pattern. It also syncs once per step, not once per micro-batch.

Sharded ("fsdp") uses FSDP2 `fully_shard` on each unit the module names in
`fsdp_units()` (its transformer blocks) and then on the root. FSDP2 hooks the
sharded submodules' own calls, so method calls on the root work unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Literal, Sequence

import attrs
import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

Mode = Literal["auto", "none", "ddp", "fsdp"]

# Gradients are all-reduced in flat buckets of about this size: few large
# messages are much faster than one message per parameter.
BUCKET_BYTES = 25 * 1024 * 1024


@attrs.frozen(kw_only=True)
class DistContext:
    """Where this process stands in the job."""

    mode: Literal["none", "ddp", "fsdp"] = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.mode != "none"


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) outside it."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def resolve_mode(mode: Mode) -> Literal["none", "ddp", "fsdp"]:
    """auto: data parallel when torchrun started more than one process."""
    if mode == "auto":
        return "ddp" if env_world()[1] > 1 else "none"
    return mode


def setup(mode: Mode, device: str | torch.device) -> DistContext:
    """Join (or start) the process group that `mode` needs."""
    resolved = resolve_mode(mode)
    rank, world_size, local_rank = env_world()
    if resolved == "none":
        if world_size > 1:
            raise ValueError(f"distributed='none' but WORLD_SIZE={world_size}: every rank would train alone")
        return DistContext()
    owns_group = False
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"distributed={resolved!r} needs torchrun's environment; missing {missing}")
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        owns_group = True
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(mode=resolved, rank=rank, world_size=world_size, local_rank=local_rank, owns_group=owns_group)


def rank_device(device: str | torch.device, ctx: DistContext) -> torch.device:
    """A CUDA device becomes this process's own GPU."""
    device = torch.device(device)
    if device.type == "cuda" and ctx.active and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def cleanup(ctx: DistContext) -> None:
    """Leave the process group, if this context started it."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def fully_shard_module(module: nn.Module) -> nn.Module:
    """FSDP2: shard each of `module.fsdp_units()` (if it has them), then the root."""
    from torch.distributed.fsdp import fully_shard

    units: Sequence[nn.Module] = list(module.fsdp_units()) if hasattr(module, "fsdp_units") else []
    for unit in units:
        fully_shard(unit)
    fully_shard(module)
    return module


@torch.no_grad()
def broadcast_parameters(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers (as DDP does)."""
    tensors = [p.data for p in module.parameters()] + [b for b in module.buffers()]
    for bucket in _buckets(tensors):
        flat = _flatten_dense_tensors(bucket)
        dist.broadcast(flat, src=0)
        for tensor, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            tensor.copy_(synced)


@torch.no_grad()
def average_gradients(parameters: Iterable[nn.Parameter], *, world_size: int) -> None:
    """Replace every gradient by its mean over the ranks.

    A parameter that got no gradient on some rank counts as zero there; one that
    got none on every rank keeps `grad = None`, so the optimizer skips it exactly
    as a single process would (AdamW would otherwise still move it).
    """
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has_grad)
    used = [p for p, count in zip(params, has_grad.tolist()) if count > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for bucket in _buckets([p.grad for p in used]):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat.div_(world_size)
        for grad, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            grad.copy_(synced)


def _buckets(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive groups of one dtype and device, each up to BUCKET_BYTES."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        current = buckets[-1] if buckets else None
        fits = current is not None and size + nbytes <= BUCKET_BYTES
        same_kind = current is not None and (current[0].dtype, current[0].device) == (tensor.dtype, tensor.device)
        if fits and same_kind:
            current.append(tensor)
            size += nbytes
        else:
            buckets.append([tensor])
            size = nbytes
    return buckets


def all_reduce_metrics(metrics: dict[str, float], *, sum_keys: Iterable[str] = ()) -> dict[str, float]:
    """Mean over ranks of each metric (sum for `sum_keys`); every rank must pass the same keys."""
    names = sorted(metrics)
    values = torch.tensor([float(metrics[n]) for n in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        values = values.cuda()
    dist.all_reduce(values)
    world_size = dist.get_world_size()
    summed = set(sum_keys)
    return {n: v if n in summed else v / world_size for n, v in zip(names, values.tolist())}


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (for RNG states, which differ per rank)."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor from a DTensor shard (collective); plain tensors pass through."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full`, laid out as the DTensor `like` (no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
