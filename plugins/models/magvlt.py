"""MAGVLT: one bidirectional transformer over the joint token space (Kim et al., CVPR 2023).

Embeddings, position tables and output head are shared with ARGVLT
(token_transformer.py); MAGVLT attends both ways and gives each
variable-length modality a target-length head. With `condition_attention: own`
(condition_cache.py) the context attends only to itself, so a sampler encodes it
once (`encode_condition`) and runs only the target at each step (`forward_target`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmgen.api import JointTokenSpace, Packed

from .answer_head import AnswerHead, answer_space
from .condition_cache import ConditionCache, allowed_keys, generation_slot, own_condition_mask
from .presets import Architecture
from .token_transformer import MaskPositions, TokenTransformer, init_weights
from .transformer_block import TransformerBlock

ConditionAttention = Literal["full", "own"]
CONDITION_ATTENTION: tuple[str, ...] = ("full", "own")


def check_condition_attention(value: str) -> None:
    if value not in CONDITION_ATTENTION:
        raise ValueError(f"condition_attention must be one of {', '.join(CONDITION_ATTENTION)}, got {value!r}")


class MagvltModel(TokenTransformer):
    name: ClassVar[str] = "magvlt"
    default_sampler: ClassVar[str] = "maskgit"  # iterative parallel refinement (sec. 3.3)

    @attrs.frozen(kw_only=True)
    class Config:
        preset: Literal["tiny", "shapes", "base", "large"]  # named in every recipe: sizes are an experiment choice
        width: int | None = None  # None: the preset's value
        depth: int | None = None
        heads: int | None = None
        dropout: float | None = None
        embedding_dropout: float | None = None
        special_positions: int | None = None  # None: sum of modality lengths + 4, as the authors
        # "special": a MASK at position p of its modality also adds special position p (the authors' code,
        # use_spc_pos); "modality": its modality's position only (models saved before this option).
        mask_positions: MaskPositions = "special"
        # Start code embeddings from the tokenizer's code vectors (code_init.py); 0: the paper's random init.
        code_init_scale: float = 0.0
        # Segment-index embedding rows (token_transformer.py): > 0 for sequences of several pairs
        # (in-context generation, docs/in_context.md); 0 adds none, as models saved before it.
        max_segments: int = 0
        # VQA as classification (answer_head.py): > 0 adds a head over this many answers on the [BOG] state;
        # 0 adds none, as models saved before it. The finetune stage's `answer_head` option sets it.
        answer_classes: int = 0
        # "full": every slot attends to every slot (the paper). "own": the slots before [BOG] attend only
        # to each other, so sampling computes the condition's keys and values once (condition_cache.py).
        condition_attention: ConditionAttention = "full"

        def __attrs_post_init__(self) -> None:
            if self.code_init_scale < 0:
                raise ValueError(f"code_init_scale must be >= 0, got {self.code_init_scale}")
            if self.max_segments < 0:
                raise ValueError(f"max_segments must be >= 0, got {self.max_segments}")
            if self.answer_classes < 0:
                raise ValueError(f"answer_classes must be >= 0, got {self.answer_classes}")
            check_condition_attention(self.condition_attention)

    @classmethod
    def from_config(cls, config: Config, **deps: Any) -> MagvltModel:
        model = super().from_config(config, **deps)
        if config.answer_classes:
            model.add_answer_head(config.answer_classes)
        return model

    def __init__(
        self,
        *,
        token_space: JointTokenSpace,
        architecture: Architecture,
        special_positions: int | None = None,
        mask_positions: MaskPositions = "special",
        max_segments: int = 0,
        condition_attention: ConditionAttention = "full",
    ) -> None:
        check_condition_attention(condition_attention)
        super().__init__(
            token_space=token_space,
            architecture=architecture,
            special_positions=special_positions,
            mask_positions=mask_positions,
            block=TransformerBlock,
            max_segments=max_segments,
        )
        # L_TL: class k of the head on a variable-length segment's BEGIN state means length k + 1.
        self.length_heads = nn.ModuleDict(
            {
                s.name: nn.Linear(architecture.width, s.length, bias=False)
                for s in token_space.spaces
                if s.variable_length
            }
        )
        self.apply(init_weights)
        self.zero_segments()
        self.answer_head: AnswerHead | None = None
        self.condition_attention = condition_attention

    def add_answer_head(self, classes: int) -> None:
        """Give the model an answer head over `classes` answers, initialised as the model's own weights.

        Made after every other module (from_config), so a model without one keeps its names and seeded init.
        """
        text = answer_space(self.token_space)
        width = self.architecture.width
        eos = text.eos_id if text.eos_id is not None else text.pad_id
        self.answer_head = AnswerHead(width=width, classes=classes, answer_length=text.length, eos_id=eos)
        self.answer_head.apply(init_weights)

    def answer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., answer_classes] from [BOG] states (answer_head.question_sequence)."""
        if self.answer_head is None:
            raise ValueError("the model has no answer head (answer_classes: 0)")
        return self.answer_head(hidden)

    def forward(self, packed: Packed) -> torch.Tensor:
        """Hidden states [B, S, D] of a packed sequence."""
        x = self.embed(packed.tokens, packed.table, packed.position, packed.segment)
        mask = self.attention_mask(packed)
        # SDPA broadcasts one mask over the heads; None keeps its fastest kernel.
        mask = None if mask is None else mask[:, None]
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x

    def encode_condition(self, packed: Packed) -> ConditionCache:
        """Every layer's keys and values of the context part of `packed` (the slots before [BOG]).

        `packed` may hold the whole sequence (its target is not read; the cache then has room for it)
        or the context alone (`[BOC] context...`, no [BOG]). Only with `condition_attention: own`,
        where the context's keys and values do not depend on the target.
        """
        self._check_own("encode_condition")
        boundary = generation_slot(packed, self.token_space)
        length = packed.tokens.shape[1] if boundary is None else boundary
        x = self.embed(
            packed.tokens[:, :length],
            packed.table[:length],
            packed.position[:length],
            None if packed.segment is None else packed.segment[:length],
        )
        mask = None if packed.attn_mask is None else packed.attn_mask[:, None, :length, :length]
        keys, values = [], []
        for block in self.blocks:
            x, (k, v) = block.forward_keeping(x, mask)
            keys.append(k)
            values.append(v)
        cache = ConditionCache(keys=keys, values=values, key_padding=packed.key_padding[:, :length], length=length)
        cache.reserve(packed.tokens.shape[1])
        return cache

    def forward_target(self, packed: Packed, condition: ConditionCache) -> torch.Tensor:
        """Hidden states [B, S - condition.length, D] of the slots of `packed` from [BOG] on.

        Equal to `forward(packed)[:, condition.length:]` when `condition` was encoded from the same
        context; only the target part runs, its queries attending to the cached context keys and
        values and to its own. The target's keys and values are written into `condition`'s room.
        """
        self._check_own("forward_target")
        start = condition.length
        boundary = generation_slot(packed, self.token_space)
        if boundary != start or packed.batch_size != condition.batch_size:
            raise ValueError(
                f"the condition covers {condition.batch_size} rows of {start} context slots; the sequence has"
                f" {packed.batch_size} rows and its [BOG] at slot {boundary}"
            )
        condition.reserve(packed.tokens.shape[1])
        x = self.embed(
            packed.tokens[:, start:],
            packed.table[start:],
            packed.position[start:],
            None if packed.segment is None else packed.segment[start:],
        )
        # Target queries see what they see in `forward`: every key but padding (and the Packed's own limits).
        full = packed.attn_mask is None and not bool(packed.key_padding.any())
        mask = None if full else allowed_keys(packed)[:, None, start:]
        for index, block in enumerate(self.blocks):
            x = block.extend(x, mask, condition.keys[index], condition.values[index], at=start)
        return x

    def attention_mask(self, packed: Packed) -> torch.Tensor | None:
        """The mask `forward` uses: [B, S, S] (True = may attend), or None for full attention."""
        if self.condition_attention == "full":
            return packed.attn_mask
        return own_condition_mask(packed, generation_slot(packed, self.token_space))

    def _check_own(self, method: str) -> None:
        if self.condition_attention != "own":
            raise ValueError(
                f"{method} needs condition_attention: own (with {self.condition_attention!r} the context"
                " attends to the target, so its keys and values change with it)"
            )

    def length_logits(self, hidden: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """[..., max_length] from BEGIN states; `modality` may be omitted when only one has variable length."""
        if modality is None:
            if len(self.length_heads) != 1:
                raise ValueError(f"say which modality's length to predict: {list(self.length_heads)}")
            modality = next(iter(self.length_heads))
        if modality not in self.length_heads:
            raise KeyError(f"modality {modality!r} has no length head (variable-length: {list(self.length_heads)})")
        return self.length_heads[modality](hidden)
