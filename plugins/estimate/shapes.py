"""A recipe's trainable stages as TrainingShapes (mmgen.api.memory_estimate), without data or trained tokenizers.

Token spaces come from what the tokenizers' options declare (a VQ-GAN's grid and codebook from its
architecture, a BPE's `vocab_size` and `max_length`: the most it can have, as a small corpus may give fewer
pieces); models are built on torch's `meta` device, so even `large` costs no memory and no time, and their
parameters are counted as built. Built-ins only: train (MAGVLT, ARGVLT, any model with `architecture` and
`blocks`) and clip; a stage or tokenizer this module does not know is one clear error line.
"""

from __future__ import annotations

from typing import Any

from mmgen.api import JointTokenSpace, Logits, TokenSpace, Tower, TrainingShape, UserError

# A packed sequence's special slots: [BOC] [BEGIN_a] .. [BOG] [BEGIN_b] (plugins/models/token_transformer.py).
LAYOUT_SPECIAL_SLOTS = 4
# The step's masked forward pass, shared by these objectives (objectives/masked_forward.py).
SHARED_FORWARD = ("mask", "unroll_mask")
TRAINED_STAGES = ("train", "clip")


def training_shapes(recipe: Any, *, registry: Any, device: str) -> list[TrainingShape]:
    """Every trainable stage of `recipe`, in recipe order, trained on `device`; a UserError when it has none."""
    found = []
    for index, entry in enumerate(recipe.stages):
        trainer = getattr(entry.spec.config, "trainer", None)
        precision = resolved_precision(getattr(trainer, "precision", "auto"), device)
        if entry.spec.use == "train":
            found.append(train_shape(entry, recipe.stages[:index], registry=registry, precision=precision))
        elif entry.spec.use == "clip":
            found.append(clip_shape(entry, recipe.stages[:index], precision=precision))
    if not found:
        stages = ", ".join(entry.key for entry in recipe.stages)
        raise UserError(
            f"estimate: {recipe.source or recipe.name} has no trainable stage ({', '.join(TRAINED_STAGES)});"
            f" its stages: {stages}"
        )
    return found


def resolved_precision(precision: str, device: str) -> str:
    """The trainer's `auto`: bf16 autocast on a GPU, fp32 on a CPU (core/trainer.py)."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def token_spaces(earlier: Any, stage_key: str, where: str) -> list[TokenSpace]:
    """The spaces of the tokenizers stage called `stage_key` (the newest earlier one), from their options."""
    for entry in reversed(earlier):
        if stage_key in (entry.key, entry.spec.use):
            specs = entry.spec.config.tokenizers
            return [declared_space(spec, f"stages.{entry.key}.tokenizers[{i}]") for i, spec in enumerate(specs)]
    raise UserError(f"estimate: {where} reads tokenizers stage {stage_key!r}, which the recipe does not have")


def declared_space(spec: Any, where: str) -> TokenSpace:
    config = spec.config
    if spec.use == "vqgan":
        if config.preset is None and config.architecture is None:
            raise UserError(f"estimate: {where}: a vqgan read from a taming checkpoint alone: give its preset too")
        architecture = config.resolved_architecture()
        grid = architecture.grid
        return TokenSpace(name=config.modality, vocab_size=architecture.codebook_size, shape=(grid, grid))
    if spec.use == "sentencepiece_bpe":
        # End-of-text (id 1) closes and pads every caption, as the tokenizer's own space says.
        return TokenSpace(
            name=config.modality,
            vocab_size=config.vocab_size,
            shape=(config.max_length,),
            variable_length=True,
            pad_id=1,
            eos_id=1,
        )
    raise UserError(
        f"estimate: {where}: tokenizer {spec.use!r} declares no token space before training"
        " (known: vqgan, sentencepiece_bpe)"
    )


def forward_passes(objectives: Any, registry: Any) -> tuple[float, float, list[str]]:
    """(forward passes, of them with token logits) per micro-batch, in whole-batch units; and notes.

    All passes of a step stay in memory together: the trainer sums the objectives' losses before one backward.
    """
    passes, scored, notes = 0.0, 0.0, []
    uses = [spec.use for spec in objectives]
    if any(use in SHARED_FORWARD for use in uses):
        passes, scored = 1.0, 1.0  # the masked forward pass that mask and unroll_mask share
    for spec in objectives:
        fraction = float(getattr(spec.config, "fraction", 1.0))  # the share of the batch the objective runs on
        if spec.use == "mask":
            continue
        if spec.use == "target_length":
            passes += fraction  # its own pass over the length view; its logits are one length head per row
        elif spec.use in ("unroll_mask", "mixsel", "causal_lm"):
            passes += fraction
            scored += fraction
        else:
            passes += 1.0
            scored += 1.0
            notes.append(f"objective {spec.use!r}: counted as one more forward pass with logits")
    return passes, scored, notes


def train_shape(entry: Any, earlier: Any, *, registry: Any, precision: str) -> TrainingShape:
    import torch
    from torch import nn

    config = entry.spec.config
    spaces = token_spaces(earlier, config.tokenizers_stage, f"stages.{entry.key}")
    extra = [n for spec in config.objectives for n in getattr(registry.get(spec.kind, spec.use), "extra_specials", ())]
    space = JointTokenSpace(spaces=spaces, extra_specials=tuple(dict.fromkeys(extra)))
    cls = registry.get("models", config.model.use)
    with torch.device("meta"):
        model = cls.from_config(config.model.config, token_space=space)
    sizes = getattr(model, "architecture", None)
    if sizes is None or not hasattr(model, "blocks"):
        raise UserError(f"estimate: stages.{entry.key}.model: {config.model.use!r} has no transformer sizes to count")
    passes, scored, notes = forward_passes(config.objectives, registry)
    objectives = ", ".join(s.use for s in config.objectives)
    units = list(model.fsdp_units()) if hasattr(model, "fsdp_units") else []
    unit_sizes = [sum(p.numel() for p in unit.parameters()) for unit in units]
    parameters = sum(p.numel() for p in model.parameters())
    # The tied output projection multiplies by one modality's rows of the embedding (a bf16 copy under autocast).
    logits_rows = max(s.vocab_size for s in spaces)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    sequence = sum(s.length for s in spaces) + LAYOUT_SPECIAL_SLOTS
    notes.append(
        f"sequence {sequence} = {' + '.join(str(s.length) for s in spaces)} tokens"
        f" + {LAYOUT_SPECIAL_SLOTS} special slots;"
        " logits over every modality's slots (IT2IT predicts both)"
    )
    trainer = config.trainer
    return TrainingShape(
        stage=entry.key,
        model=(
            f"{config.model.use} {config.model.config.preset}"
            f" (width {sizes.width}, depth {sizes.depth}, heads {sizes.heads})"
        ),
        parameters=parameters,
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        root_parameters=parameters - sum(unit_sizes),
        unit_parameters=max(unit_sizes, default=0),
        matmul_weights=linear + logits_rows * sizes.width,
        towers=(
            Tower(
                depth=sizes.depth,
                width=sizes.width,
                heads=sizes.heads,
                mlp_ratio=sizes.mlp_ratio,
                sequence=sequence,
                dropout=sizes.dropout,
                rows=passes,
            ),
        ),
        logits=tuple(Logits(tokens=s.length, vocab=s.vocab_size, width=sizes.width, rows=scored) for s in spaces),
        batch_size=trainer.batch_size,
        grad_accum=trainer.grad_accum,
        ema=trainer.ema_decay is not None,
        precision=precision,
        can_checkpoint=hasattr(model, "set_activation_checkpointing"),
        notes=(f"{passes:g} forward passes per micro-batch (objectives: {objectives})", *notes),
    )


def clip_shape(entry: Any, earlier: Any, *, precision: str) -> TrainingShape:
    import torch

    from mmgen.plugins.clip.model import ClipModel, ClipSizes

    config = entry.spec.config
    spaces = {s.name: s for s in token_spaces(earlier, config.tokenizers_stage, f"stages.{entry.key}")}
    for modality in (config.image_modality, config.text_modality):
        if modality not in spaces:
            have = ", ".join(spaces)
            raise UserError(f"estimate: stages.{entry.key}: no tokenizer makes modality {modality!r} (have: {have})")
    image, text = spaces[config.image_modality], spaces[config.text_modality]
    sizes = ClipSizes(
        image_vocab=image.vocab_size,
        image_length=image.length,
        text_vocab=text.vocab_size,
        text_length=text.length,
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        embed_dim=config.embed_dim,
    )
    with torch.device("meta"):
        model = ClipModel(sizes)
    # The trainer ignores activation_checkpointing for a model without set_activation_checkpointing.
    parameters = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    shared = dict(depth=config.depth, width=config.width, heads=config.heads, mlp_ratio=4)
    trainer = config.trainer
    return TrainingShape(
        stage=entry.key,
        model=f"clip dual encoder (width {config.width}, depth {config.depth}, heads {config.heads})",
        parameters=parameters,
        trainable=parameters,
        root_parameters=parameters,  # no FSDP units: sharded as one
        unit_parameters=0,
        matmul_weights=linear,
        # Each encoder reads its tokens after a [CLS] slot; only text has padding to mask.
        towers=(Tower(sequence=image.length + 1, masked=False, **shared), Tower(sequence=text.length + 1, **shared)),
        batch_size=trainer.batch_size,
        grad_accum=trainer.grad_accum,
        ema=trainer.ema_decay is not None,
        precision=precision,
        can_checkpoint=hasattr(model, "set_activation_checkpointing"),
        notes=("image and text encoders, one pass each; the contrastive loss's [B, B] scores are negligible",),
    )
