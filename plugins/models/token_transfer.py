"""A trained model carried over to a new token space: new text pieces, a longer text, the same network.

Fine-tuning on text the pretrained tokenizer cannot spell (VQA's `?`, `:` and
digits in a vocabulary learnt from Shapes captions) needs a refitted tokenizer,
and so new token ids. Everything but the id-indexed rows carries over as it is;
the rows are matched by what the tokens mean:

- content rows (embedding and output bias) of an unchanged modality (same
  tokenizer content hash) are copied as they are; of a changed one, matched by
  piece string (`pieces()` of both tokenizers), and a piece the old vocabulary
  lacks starts as the mean of the old rows that spell it (its old
  tokenization), or of all the modality's old rows when the old tokenizer
  cannot spell it exactly (a `?` it never saw): a common initialisation for
  added vocabulary, near what the text meant;
- special tokens (BOC, BOG, BEGIN_x, MASK_x, markers) are copied by name;
- each position table keeps its old rows; a longer table repeats its last old
  row, and a longer length head its last old class, so new slots start like
  the last trained one until fine-tuning tells them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mmgen.api import JointTokenSpace, UserError

SPIECE_SPACE = "\u2581"  # SentencePiece's word-start mark


def token_surfaces(tokenizer: Any, vocab_size: int) -> list[str]:
    """Each content id's piece string (`pieces()`), else its decoded text."""
    pieces = getattr(tokenizer, "pieces", None)
    if pieces is not None:
        return list(pieces())
    return [tokenizer.decode_ids([i]) for i in range(vocab_size)]


def row_sources(old_tokenizer: Any, new_tokenizer: Any, *, old_size: int, new_size: int) -> list[list[int]]:
    """For each new content id, the old content ids whose rows it starts from (their mean)."""
    old = {piece: i for i, piece in enumerate(token_surfaces(old_tokenizer, old_size))}
    return [[old[piece]] if piece in old else spelt(old_tokenizer, piece, old_size) for piece in
            token_surfaces(new_tokenizer, new_size)]


def spelt(old_tokenizer: Any, piece: str, old_size: int) -> list[int]:
    """The old ids that spell `piece` exactly, or every old id when the old tokenizer cannot spell it."""
    text = piece.replace(SPIECE_SPACE, " ").strip()
    if text:
        ids = [i for i in old_tokenizer.encode_ids(text) if i != old_tokenizer.token_space.eos_id]
        if ids and all(0 <= i < old_size for i in ids) and old_tokenizer.decode_ids(ids) == text:
            return ids
    return list(range(old_size))


def transfer_state(
    old_model: Any,
    new_model: Any,
    *,
    old_tokenizers: Mapping[str, Any],
    new_tokenizers: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The state dict of `new_model` (built for the new token space) filled from `old_model`'s."""
    old_space: JointTokenSpace = old_model.token_space
    new_space: JointTokenSpace = new_model.token_space
    old_state = old_model.state_dict()
    if [s.name for s in new_space.spaces] != [s.name for s in old_space.spaces]:
        raise UserError(
            f"finetune: the token spaces have different modalities (pretrained {list(old_space.modalities)},"
            f" these tokenizers {list(new_space.modalities)}); a transfer keeps the modalities and their order"
        )
    content = content_map(old_space, new_space, old_tokenizers=old_tokenizers, new_tokenizers=new_tokenizers)
    specials = [old_space.special(name) for name in new_space.special_names if name in old_space.special_names]
    new_specials = [new_space.special(name) for name in new_space.special_names if name in old_space.special_names]
    state = {}
    for name, target in new_model.state_dict().items():
        old = old_state[name]
        if name == "embedding.weight":
            value = target.clone()
            value[: new_space.content_size] = gather_rows(old, content)
            value[new_specials] = old[specials]
        elif name == "output_bias":
            value = gather_rows(old[:, None], content)[:, 0]
        elif name == "positions.weight":
            value = torch.cat(
                [grow_rows(old, start, size, new) for start, size, new in table_ranges(old_model, new_model)]
            )
        elif name.startswith("length_heads."):
            value = grow_rows(old, 0, old.shape[0], target.shape[0])
        else:
            value = old
        if value.shape != target.shape:
            raise UserError(f"finetune: cannot carry {name} over (shape {tuple(old.shape)} in the pretrained model)")
        state[name] = value.to(target.dtype)
    return state


def content_map(
    old_space: JointTokenSpace,
    new_space: JointTokenSpace,
    *,
    old_tokenizers: Mapping[str, Any],
    new_tokenizers: Mapping[str, Any],
) -> list[list[int]]:
    """Old joint content ids behind each new joint content id."""
    sources: list[list[int]] = []
    for new in new_space.spaces:
        old = old_space.space(new.name)
        offset = old_space.offset(new.name)
        same = old_tokenizers[new.name].content_hash() == new_tokenizers[new.name].content_hash()
        if same:
            rows = [[i] for i in range(new.vocab_size)]
        else:
            rows = row_sources(
                old_tokenizers[new.name], new_tokenizers[new.name], old_size=old.vocab_size, new_size=new.vocab_size
            )
        sources += [[offset + i for i in row] for row in rows]
    return sources


def gather_rows(old: torch.Tensor, sources: list[list[int]]) -> torch.Tensor:
    return torch.stack([old[row].mean(dim=0) for row in sources])


def grow_rows(old: torch.Tensor, start: int, size: int, new_size: int) -> torch.Tensor:
    """Rows [start, start + new_size) of a table of `size` old rows, the last repeated past its end."""
    rows = old[start : start + min(size, new_size)]
    extra = rows[-1:].expand(new_size - rows.shape[0], -1)
    return torch.cat([rows, extra])


def table_ranges(old_model: Any, new_model: Any) -> list[tuple[int, int, int]]:
    """(old start, old size, new size) of each position table: the specials, then each modality."""
    return list(zip(old_model.table_starts.tolist(), old_model.table_sizes.tolist(), new_model.table_sizes.tolist()))
