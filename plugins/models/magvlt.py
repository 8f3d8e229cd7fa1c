"""MAGVLT: one bidirectional transformer over the joint token space (Kim et al., CVPR 2023).

Embeddings, position tables and output head are shared with ARGVLT
(token_transformer.py); MAGVLT attends both ways and gives each
variable-length modality a target-length head.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmgen.api import JointTokenSpace, Packed

from .answer_head import AnswerHead, answer_space
from .presets import Architecture
from .token_transformer import MaskPositions, TokenTransformer, init_weights
from .transformer_block import TransformerBlock


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

        def __attrs_post_init__(self) -> None:
            if self.code_init_scale < 0:
                raise ValueError(f"code_init_scale must be >= 0, got {self.code_init_scale}")
            if self.max_segments < 0:
                raise ValueError(f"max_segments must be >= 0, got {self.max_segments}")
            if self.answer_classes < 0:
                raise ValueError(f"answer_classes must be >= 0, got {self.answer_classes}")

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
    ) -> None:
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
        # SDPA broadcasts one mask over the heads; None keeps its fastest kernel.
        mask = None if packed.attn_mask is None else packed.attn_mask[:, None]
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x

    def length_logits(self, hidden: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """[..., max_length] from BEGIN states; `modality` may be omitted when only one has variable length."""
        if modality is None:
            if len(self.length_heads) != 1:
                raise ValueError(f"say which modality's length to predict: {list(self.length_heads)}")
            modality = next(iter(self.length_heads))
        if modality not in self.length_heads:
            raise KeyError(f"modality {modality!r} has no length head (variable-length: {list(self.length_heads)})")
        return self.length_heads[modality](hidden)
