"""Training memory per device on paper: parameters, gradients, AdamW, activations (`mmgen estimate`).

Pure arithmetic over a `TrainingShape` (what a plugin reads off a recipe: parameter counts, the transformer
towers' sizes, the logits a step scores); no torch. Every term is the bytes that are alive at once at the peak
of one optimizer update, which is the end of the forward pass (every activation stored, the gradients of the
previous update already freed by `zero_grad(set_to_none=True)`) or early in the backward pass (gradients
appear while activations are freed); we add both, which over-counts by at most the gradients of the last
blocks to run backward first.

Precision (`precision`):
- fp32: parameters, gradients and activations in 4 bytes.
- bf16: the trainer's `torch.autocast(dtype=bfloat16)` (core/trainer.py). Parameters stay fp32 and are their
  own master copy (no separate one), gradients are fp32 (they take the parameters' dtype), AdamW keeps two fp32
  moments. Matmul inputs and outputs are bf16 (2 bytes); LayerNorm, softmax and the loss run in fp32, and the
  residual stream stays fp32 (fp32 + bf16 is fp32). Autocast also keeps a bf16 copy of each matmul weight
  for the backward pass (its cast cache lives for the whole forward pass).

Device (`device`): on "cuda", scaled_dot_product_attention runs a fused kernel (flash or memory-efficient;
both support dropout and masks) that stores its output and a log-sum-exp per head, never the [S, S] scores;
dropout masks are bool. On "cpu" the fused kernel is used only without dropout; with dropout torch falls
back to the math path, which stores the scores, the softmax and its dropout mask ([H, S, S] each), and
dropout masks take the activation dtype. Checked tensor by tensor against saved-tensor hooks in
tests/test_estimate.py.

The per-block count follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", sec. 4.1: 34 s b h bytes per layer in 16-bit, without the attention scores a fused kernel never
stores); ours is written out per stored tensor for this codebase's block (plugins/models/transformer_block.py).
"""

from __future__ import annotations

from typing import Literal

import attrs

GIB = 1024**3
Precision = Literal["fp32", "bf16"]
Device = Literal["cuda", "cpu"]
Strategy = Literal["single", "ddp", "fsdp"]

# core/distributed.py all-reduces gradients in flat buckets of up to this many bytes (one extra copy at a time).
DDP_BUCKET_BYTES = 25 * 1024 * 1024
# Bytes per token of LayerNorm statistics: two norms per block, each keeping a mean and a 1/std in fp32.
LAYER_NORM_STATS = 2 * 2 * 4
FP32 = 4


@attrs.frozen(kw_only=True)
class Tower:
    """A stack of identical pre-LN transformer blocks run over `sequence` slots per example."""

    depth: int
    width: int
    heads: int
    mlp_ratio: int
    sequence: int
    dropout: float = 0.0
    masked: bool = True  # an attention mask (padding) reaches the kernel
    rows: float = 1.0  # examples through this tower per example of the micro-batch (several forward passes)


@attrs.frozen(kw_only=True)
class Logits:
    """The output head a step scores: `tokens` slots per example over `vocab` classes, from `width` states."""

    tokens: int
    vocab: int
    width: int
    rows: float = 1.0


@attrs.frozen(kw_only=True)
class TrainingShape:
    """What one trainable stage's memory depends on, read off the recipe (no weights, no data)."""

    stage: str  # the recipe's stage key
    model: str  # a short description: "magvlt base (width 1024, depth 24)"
    parameters: int
    trainable: int
    root_parameters: int  # outside every FSDP unit: gathered whole for the whole step under FSDP2
    unit_parameters: int  # the largest FSDP unit (one transformer block)
    matmul_weights: int  # weights that enter a matmul (autocast keeps a bf16 copy of each)
    towers: tuple[Tower, ...]
    logits: tuple[Logits, ...] = ()
    batch_size: int = 32  # the global batch of one update (TrainerConfig.batch_size)
    grad_accum: int = 1
    ema: bool = False
    precision: Precision = "bf16"
    can_checkpoint: bool = True  # the model offers activation checkpointing (set_activation_checkpointing)
    notes: tuple[str, ...] = ()

    def micro_batch(self, devices: int) -> int:
        """Examples per device per backward pass (TrainerConfig.micro_batch_size)."""
        per_step = devices * self.grad_accum
        if self.batch_size % per_step:
            raise ValueError(
                f"{self.stage}: batch_size {self.batch_size} is not divisible by {devices} device(s)"
                f" x grad_accum {self.grad_accum}"
            )
        return self.batch_size // per_step


@attrs.frozen(kw_only=True)
class MemoryRow:
    """Bytes per device of one strategy; `total` is their sum."""

    strategy: Strategy
    devices: int
    checkpointing: bool
    micro_batch: int
    parameters: int
    gradients: int
    optimizer: int  # AdamW's two fp32 moments (and the EMA copy when on)
    communication: int  # DDP's all-reduce bucket; FSDP2's gathered parameters and their unsharded gradients
    activations: int  # stored for backward, the autocast weight copies included
    total: int


def sizes(precision: Precision) -> tuple[int, int]:
    """(matmul bytes, residual-stream bytes) per element."""
    return (2, FP32) if precision == "bf16" else (FP32, FP32)


def block_bytes(tower: Tower, *, precision: Precision, device: Device) -> int:
    """Bytes one block stores for backward per example (one row of the micro-batch)."""
    matmul, residual = sizes(precision)
    s, d, h = tower.sequence, tower.width, tower.heads
    # The two LayerNorms keep their inputs: the block input and the residual stream after attention.
    stored = 2 * residual * s * d
    # Matmul inputs kept by their Linear / attention: LN1 out, q k v, attention output, LN2 out (1 + 3 + 1 + 1),
    # the MLP's hidden before GELU (GELU's input) and after (mlp_out's input), mlp_ratio each.
    stored += matmul * s * d * (6 + 2 * tower.mlp_ratio)
    stored += LAYER_NORM_STATS * s
    math_path = device == "cpu" and tower.dropout > 0
    if math_path:
        # Scores after softmax, the attention dropout mask and the dropped probabilities: [H, S, S] each.
        stored += 3 * matmul * h * s * s
    else:
        stored += FP32 * h * s  # the fused kernel's log-sum-exp per head and query
        if tower.masked:
            stored += (matmul if device == "cuda" else FP32) * s * s  # the mask as an additive bias
    if tower.dropout > 0:
        mask = 1 if device == "cuda" else matmul
        stored += 2 * mask * s * d  # the two residual dropout masks
    return stored


def block_input_bytes(tower: Tower, *, precision: Precision) -> int:
    """What activation checkpointing keeps of a block per example: its input, in the residual stream's dtype."""
    return sizes(precision)[1] * tower.sequence * tower.width


def logits_bytes(head: Logits, *, precision: Precision) -> int:
    """Bytes of the output head per example: dense + GELU + LayerNorm inputs, the logits and the loss's."""
    matmul, residual = sizes(precision)
    # head_dense and the tied projection keep their (bf16) inputs, GELU its input; LayerNorm its fp32 input.
    states = (3 * matmul + residual) * head.width
    # The logits (matmul dtype), cross entropy's fp32 log-softmax and, in backward, its fp32 gradient.
    scores = (matmul + 2 * FP32) * head.vocab
    return head.tokens * (states + scores)


def activation_bytes(shape: TrainingShape, *, micro_batch: int, checkpointing: bool, device: Device) -> int:
    """Activations per device: every forward pass's stored tensors (one backward follows their summed loss)."""
    precision = shape.precision
    total = 0.0
    for tower in shape.towers:
        if checkpointing:
            # Only block inputs are kept; the backward pass recomputes one block at a time.
            total += tower.rows * tower.depth * block_input_bytes(tower, precision=precision)
        else:
            total += tower.rows * tower.depth * block_bytes(tower, precision=precision, device=device)
    if checkpointing and shape.towers:
        total += max(block_bytes(t, precision=precision, device=device) for t in shape.towers)
    total += sum(head.rows * logits_bytes(head, precision=precision) for head in shape.logits)
    copies = 2 * shape.matmul_weights if precision == "bf16" else 0
    return int(micro_batch * total) + copies


def estimate(
    shape: TrainingShape, *, strategy: Strategy, devices: int, checkpointing: bool, device: Device = "cuda"
) -> MemoryRow:
    """Bytes per device of training `shape` with `strategy` on `devices` devices."""
    if strategy == "single" and devices != 1:
        raise ValueError("a single-device run has devices=1")
    micro = shape.micro_batch(devices)
    # fp32 parameters (under bf16 autocast too: they are the master weights), fp32 gradients of the trainable
    # ones, AdamW's exp_avg and exp_avg_sq (fp32), and an EMA shadow of every parameter when on.
    parameters = FP32 * shape.parameters
    gradients = FP32 * shape.trainable
    optimizer = 2 * FP32 * shape.trainable + (FP32 * shape.parameters if shape.ema else 0)
    communication = 0
    if strategy == "ddp":
        communication = min(DDP_BUCKET_BYTES, gradients)  # one flattened bucket being all-reduced
    elif strategy == "fsdp":
        # FSDP2 shards every parameter, gradient and optimizer state 1/N (rounded up per tensor: ignored).
        parameters, gradients, optimizer = (-(-x // devices) for x in (parameters, gradients, optimizer))
        # Gathered whole at once: the root's own parameters (embeddings, heads) for the whole step, the running
        # block and the next one (FSDP2 prefetches one unit ahead); in backward, the root's and one block's
        # unsharded gradients before their reduce-scatter.
        gathered = FP32 * (shape.root_parameters + 2 * shape.unit_parameters)
        unsharded_grads = FP32 * (shape.root_parameters + shape.unit_parameters)
        communication = gathered + unsharded_grads
    activations = activation_bytes(shape, micro_batch=micro, checkpointing=checkpointing, device=device)
    total = parameters + gradients + optimizer + communication + activations
    return MemoryRow(
        strategy=strategy,
        devices=devices,
        checkpointing=checkpointing,
        micro_batch=micro,
        parameters=parameters,
        gradients=gradients,
        optimizer=optimizer,
        communication=communication,
        activations=activations,
        total=total,
    )


def estimate_all(shape: TrainingShape, *, devices: int, device: Device = "cuda") -> list[MemoryRow]:
    """Single device, then DDP and FSDP2 on `devices` (when > 1), each without and with activation checkpointing."""
    plans: list[tuple[Strategy, int]] = [("single", 1)]
    if devices > 1:
        plans += [("ddp", devices), ("fsdp", devices)]
    return [
        estimate(shape, strategy=strategy, devices=n, checkpointing=checkpointing, device=device)
        for strategy, n in plans
        for checkpointing in ((False, True) if shape.can_checkpoint else (False,))
    ]
