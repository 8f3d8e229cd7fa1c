"""MAGVLT code embeddings that start from the tokenizer's code vectors (plugins/models/code_init.py)."""

from __future__ import annotations

import pytest
import torch

from mmgen.plugins.models.code_init import INIT_STD, add_code_vectors, standardised, tokenizer_code_vectors
from mmgen.plugins.models.magvlt import MagvltModel

from objective_helpers import one_thread, tiny_space  # noqa: F401  (autouse: one torch thread)


class VectorTokenizer:
    """Stands in for a VQ tokenizer: only what the model reads."""

    def __init__(self, modality: str, vectors: torch.Tensor) -> None:
        self.modality = modality
        self.vectors = vectors

    def code_vectors(self) -> torch.Tensor:
        return self.vectors


class PlainTokenizer:
    modality = "text"  # a BPE: no code vectors


def build(*, scale: float, tokenizers) -> MagvltModel:
    torch.manual_seed(0)
    config = MagvltModel.Config(preset="tiny", code_init_scale=scale)
    return MagvltModel.from_config(config, token_space=tiny_space(), tokenizers=tokenizers)


def codebook() -> torch.Tensor:
    # 8 codes of the tiny image space, 2-D: codes 0-3 and 4-7 sit in two tight clusters.
    near = torch.tensor([[0.0, 0.0], [0.1, -0.1], [-0.1, 0.05], [0.05, 0.1]])
    return torch.cat([near + 1.0, near - 1.0])


def test_the_added_part_has_the_codebooks_gram_matrix_and_only_image_rows_change():
    space = tiny_space()
    plain = build(scale=0.0, tokenizers=None).embedding.weight.detach()
    model = build(scale=3.0, tokenizers={"image": VectorTokenizer("image", codebook()), "text": PlainTokenizer()})
    start, stop = space.content_range("image")
    added = model.embedding.weight.detach() - plain
    # The model's own random init is drawn first, so it is the same as without code vectors.
    assert torch.equal(added[:start], torch.zeros_like(added[:start]))
    assert torch.equal(added[stop:], torch.zeros_like(added[stop:]))
    width = model.architecture.width
    c = standardised(codebook())
    expected_gram = (3.0 * INIT_STD) ** 2 * (width / 2) * (c @ c.T)
    assert torch.allclose(added[start:stop] @ added[start:stop].T, expected_gram, atol=1e-6)
    # Row norm of the added part = scale x the random part's expected norm (std * sqrt(width)),
    # times sqrt((K - 1) / K) as the standardisation divides by the unbiased std over K = 8 codes.
    expected_norm = 3.0 * INIT_STD * width**0.5 * (7 / 8) ** 0.5
    assert torch.allclose(added[start:stop].pow(2).sum(1).mean().sqrt(), torch.tensor(expected_norm), rtol=1e-5)


def test_codes_in_one_cluster_start_closer_than_codes_across_clusters():
    model = build(scale=10.0, tokenizers=[VectorTokenizer("image", codebook())])
    start, stop = tiny_space().content_range("image")
    rows = torch.nn.functional.normalize(model.embedding.weight.detach()[start:stop], dim=1)
    cosine = rows @ rows.T
    within = cosine[:4, :4][~torch.eye(4, dtype=torch.bool)]
    across = cosine[:4, 4:]
    assert within.min() > 0.5 and across.max() < -0.5


def test_scale_zero_or_no_tokenizers_keeps_the_papers_random_init():
    reference = build(scale=0.0, tokenizers=None).embedding.weight
    with_vectors_off = build(scale=0.0, tokenizers=[VectorTokenizer("image", codebook())]).embedding.weight
    default_without_tokenizers = build(scale=10.0, tokenizers=None).embedding.weight
    assert torch.equal(reference, with_vectors_off) and torch.equal(reference, default_without_tokenizers)


def test_the_projection_follows_the_seed():
    tokenizers = [VectorTokenizer("image", codebook())]
    assert torch.equal(build(scale=3.0, tokenizers=tokenizers).embedding.weight, build(scale=3.0, tokenizers=tokenizers).embedding.weight)


def test_wrong_code_vectors_and_scale_are_clear_errors():
    with pytest.raises(ValueError, match=r"magvlt image codes: code vectors must be \[8, D\].*got \(7, 2\)"):
        build(scale=1.0, tokenizers=[VectorTokenizer("image", codebook()[:7])])
    with pytest.raises(ValueError, match="dimension 64 do not fit embeddings of width 32"):
        add_code_vectors(torch.zeros(8, 32), torch.randn(8, 64), scale=1.0, where="here")
    with pytest.raises(ValueError, match="code_init_scale must be >= 0, got -1"):
        MagvltModel.Config(preset="tiny", code_init_scale=-1.0)


def test_only_tokenizers_with_code_vectors_are_read():
    found = tokenizer_code_vectors({"image": VectorTokenizer("image", codebook()), "text": PlainTokenizer()})
    assert list(found) == ["image"] and torch.equal(found["image"], codebook())
    assert tokenizer_code_vectors(None) == {}
