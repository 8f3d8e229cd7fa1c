"""The models the CPU performance benchmarks time: ours (MAGVLT, ARGVLT) and the peers, at equal sizes.

Sizes (`SIZES`): `shapes` is the quickstart's model and tokens (8x8 image tokens of 512 codes,
captions of up to 24 BPE tokens of 128); `base` is the paper's (width 1024, 24 blocks, 8 heads;
16x16 tokens of 16,384 codes, captions of up to 64 of 49,408); `quick` is the test-sized `tiny`.

Ours are built as the train stage builds them (`build_training`: the registry, the joint token
space, the objectives and p_tau), from random weights. The peers (the `bench` extra) get the
same width, depth, heads, MLP ratio, vocabularies and sequence lengths:
- muse-maskgit-pytorch's `MaskGit` with a `MaskGitTransformer`: self-attention over the target
  tokens, cross-attention to the condition. Its text condition normally comes from a T5 download;
  here a token embedding table of the condition's vocabulary gives the condition embeddings
  (as our models embed every token), so nothing is downloaded.
- an x-transformers `TransformerWrapper(Decoder)` with `AutoregressiveWrapper.generate(cache_kv=True)`:
  the joint vocabulary as input, the target modality's vocabulary as output (as ours score only
  the target modality), the condition as the prompt.
"""

from __future__ import annotations

import os
import types
from typing import Any

import attrs
import torch
from torch import nn

from mmgen.batch import Segment, TokenBatch
from mmgen.config import structure_spec
from mmgen.objectives.mixsel import halves_extra
from mmgen.objectives.tasks import paper_tasks
from mmgen.plugins.stages.train_model import build_training
from mmgen.token_space import TokenSpace

os.environ.setdefault("TQDM_DISABLE", "1")  # muse's generate draws a tqdm bar per call

TEXT_SEPARATOR = 1  # MixSel's caption separator (a local text id; BPE encodes "|")
EOS_ID = 0  # end-of-text and padding, as the BPE tokenizer's space


@attrs.frozen(kw_only=True)
class Sizes:
    preset: str  # the MAGVLT/ARGVLT preset (width, depth, heads)
    image_side: int
    image_vocab: int
    text_length: int
    text_vocab: int
    train_batch: int

    @property
    def image_tokens(self) -> int:
        return self.image_side**2


SIZES = {
    "quick": Sizes(preset="tiny", image_side=4, image_vocab=32, text_length=8, text_vocab=16, train_batch=4),
    "shapes": Sizes(preset="shapes", image_side=8, image_vocab=512, text_length=24, text_vocab=128, train_batch=32),
    # Batch 4: one base step is ~10-30 s on 2 cores (the reporter timed batch 4 too).
    "base": Sizes(preset="base", image_side=16, image_vocab=16_384, text_length=64, text_vocab=49_408, train_batch=4),
}

OBJECTIVES = {
    "mask": [{"use": "mask"}],
    # The train stage's default (MAGVLT sec. 3.2): L_mask + 0.01 L_TL + L_UM + 0.5 L_MS.
    "paper": [
        {"use": "mask"},
        {"use": "target_length"},
        {"use": "unroll_mask"},
        {"use": "mixsel", "separator_ids": [TEXT_SEPARATOR]},
    ],
    "causal_lm": [{"use": "causal_lm"}],
}


def architecture(sizes: Sizes) -> Any:
    from mmgen.plugins.models.presets import PRESETS

    return PRESETS[sizes.preset]


def stand_in_tokenizers(sizes: Sizes) -> dict[str, Any]:
    """What build_training reads of the tokenizers: their token spaces (image first, as the recipes)."""
    image = TokenSpace(name="image", vocab_size=sizes.image_vocab, shape=(sizes.image_side, sizes.image_side))
    text = TokenSpace(
        name="text",
        vocab_size=sizes.text_vocab,
        shape=(sizes.text_length,),
        variable_length=True,
        pad_id=EOS_ID,
        eos_id=EOS_ID,
    )
    return {"image": types.SimpleNamespace(token_space=image), "text": types.SimpleNamespace(token_space=text)}


def build_ours(
    model: str, objectives: str, sizes: Sizes, *, registry: Any, task: str = "t2i", **options: Any
) -> Any:
    """The train stage's Training (token space, model, loss) for `model` ("magvlt"/"argvlt"), training `task` only.

    `options`: more of the model's options (as a recipe's `model:` gives them).
    """
    spec = {"use": model, "preset": sizes.preset, **options}
    return build_training(
        model=structure_spec("models", spec, path="model", registry=registry),
        objectives=[
            structure_spec("objectives", o, path=f"objectives[{i}]", registry=registry)
            for i, o in enumerate(OBJECTIVES[objectives])
        ],
        tasks={task: paper_tasks()[task]},
        seed=0,
        registry=registry,
        tokenizers=stand_in_tokenizers(sizes),
    )


def synthetic_batch(sizes: Sizes, batch_size: int, *, seed: int = 0) -> TokenBatch:
    """Random image codes, captions of half to full length ending in end-of-text, MixSel's image halves."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, sizes.image_vocab, (batch_size, sizes.image_tokens), generator=g)
    length = sizes.text_length
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=g)
    words = torch.randint(2, sizes.text_vocab, (batch_size, length), generator=g)
    captions = torch.where(torch.arange(length)[None] < lengths[:, None] - 1, words, EOS_ID)
    halves = torch.randint(0, sizes.image_vocab, (batch_size, 2, sizes.image_tokens // 2), generator=g)
    return TokenBatch(
        segments=(Segment.full("image", images), Segment(modality="text", tokens=captions, lengths=lengths)),
        extras={halves_extra("image"): halves},
    )


def batch_tokens(batch: TokenBatch) -> int:
    """The trainer's `tokens` metric: the batch's non-padding tokens."""
    return sum(int(s.lengths.sum()) for s in batch.segments)


# ---- peers -------------------------------------------------------------------------------------------


def muse_installed() -> bool:
    try:
        import muse_maskgit_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def xtransformers_installed() -> bool:
    try:
        import x_transformers  # noqa: F401
    except ImportError:
        return False
    return True


class MuseMaskGit(nn.Module):
    """muse's MaskGit over `target_side`^2 tokens of `target_vocab`, conditioned on tokens of `condition_vocab`."""

    def __init__(self, sizes: Sizes, *, target_side: int, target_vocab: int, condition_vocab: int) -> None:
        super().__init__()
        from muse_maskgit_pytorch import MaskGit, MaskGitTransformer, VQGanVAE
        from muse_maskgit_pytorch import t5 as muse_t5

        arch = architecture(sizes)
        # get_encoded_dim reads a T5 config from the Hugging Face hub unless the name is known: a local stand-in.
        name = f"mmgen-bench-condition-embedding-{arch.width}"
        muse_t5.T5_CONFIGS[name] = {"config": types.SimpleNamespace(d_model=arch.width)}
        transformer = MaskGitTransformer(
            num_tokens=target_vocab,
            seq_len=target_side**2,
            dim=arch.width,
            depth=arch.depth,
            heads=arch.heads,
            dim_head=arch.width // arch.heads,
            ff_mult=arch.mlp_ratio,
            t5_name=name,
        )

        class NoVae(VQGanVAE):
            """MaskGit requires a VAE; token ids in and out here (no pixels)."""

            def __init__(self) -> None:
                nn.Module.__init__(self)

            codebook_size = target_vocab

            def copy_for_eval(self) -> NoVae:
                return self

            def get_encoded_fmap_size(self, image_size: int) -> int:
                return target_side

            def decode_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
                return ids

        self.condition_embedding = nn.Embedding(condition_vocab, arch.width)
        self.maskgit = MaskGit(image_size=target_side, transformer=transformer, vae=NoVae(), cond_drop_prob=0.0)
        self.target_side = target_side

    def loss(self, targets: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.maskgit(targets, text_embeds=self.condition_embedding(condition))

    @torch.no_grad()
    def generate(self, condition: torch.Tensor, *, steps: int) -> torch.Tensor:
        embeds = self.condition_embedding(condition)
        self.maskgit.transformer.encode_text = lambda texts: embeds  # the condition, already embedded
        # cond_scale 1: no guidance (one forward per step), as MAGVLT samples.
        return self.maskgit.generate(
            [""] * condition.shape[0], fmap_size=self.target_side, timesteps=steps, cond_scale=1
        )


class XTransformersDecoder(nn.Module):
    """x-transformers' decoder: joint vocabulary in, `target_vocab` out, sampled with its KV cache."""

    def __init__(self, sizes: Sizes, *, joint_vocab: int, target_vocab: int, max_length: int) -> None:
        super().__init__()
        from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

        arch = architecture(sizes)
        net = TransformerWrapper(
            num_tokens=joint_vocab,
            logits_dim=target_vocab,
            max_seq_len=max_length,
            attn_layers=Decoder(
                dim=arch.width,
                depth=arch.depth,
                heads=arch.heads,
                attn_dim_head=arch.width // arch.heads,
                ff_mult=arch.mlp_ratio,
            ),
        )
        self.wrapper = AutoregressiveWrapper(net)

    def loss(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.wrapper(sequence)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, *, length: int) -> torch.Tensor:
        # top-k 32 at temperature 1, as the autoregressive sampler's defaults; no end token: full length.
        return self.wrapper.generate(prompt, length, cache_kv=True, filter_kwargs={"k": 32})


def weight_bytes(module: nn.Module) -> int:
    """fp32 bytes of the weights one forward reads in full: every parameter outside embedding tables."""
    tables = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    return 4 * sum(p.numel() for p in module.parameters() if id(p) not in tables)
