"""The cycle reranker (log p(image | caption)) and cycle-checked caption refinement, on a fake model.

The fake model's logits are fixed per (modality, position), shifted when the
context shows a real token, so every score and every choice is computable by
hand. Quality on the trained Shapes model is guarded in test_shipped_checkpoints.py.
"""

from __future__ import annotations

import pytest
import torch

from generation_helpers import FakeModel, spaces
from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.api import ConfigError, Segment, best_in_groups, load_registry, structure_attrs, structure_spec
from mmgen.plugins.refiners.caption_refine import CaptionRefiner
from mmgen.plugins.refiners.refine_config import RefineConfig
from mmgen.plugins.rerankers.cycle import CycleReranker, interleaved_sets
from mmgen.plugins.stages.generate import GenerateStage

SPACE = spaces(image_shape=(2, 2), image_vocab=8, text_length=6, text_vocab=10)  # text EOS = pad = 0
IMAGE_LOGITS = torch.arange(4 * 8, dtype=torch.float).view(4, 8) / 10  # position p, token t: (8p + t) / 10
IMAGE_SHIFT = torch.zeros(4, 8)
IMAGE_SHIFT[:, 3] = 2.0  # a visible caption favours code 3 everywhere


def text_logits(preferred: list[list[float]]) -> torch.Tensor:
    """[6, 10] text logits: row p given, padded with zeros."""
    table = torch.zeros(6, 10)
    for position, row in enumerate(preferred):
        table[position, : len(row)] = torch.tensor(row)
    return table


def model(text_table: torch.Tensor | None = None) -> FakeModel:
    text_table = torch.zeros(6, 10) if text_table is None else text_table
    return FakeModel(
        SPACE,
        {"image": IMAGE_LOGITS, "text": text_table},
        conditioned_shift={"image": IMAGE_SHIFT, "text": torch.zeros(6, 10)},
    )


def images(rows: list[list[int]]) -> Segment:
    return Segment.full("image", torch.tensor(rows))


def captions(rows: list[list[int]]) -> Segment:
    """Captions ending in EOS (0), padded with EOS to length 6."""
    tokens = torch.zeros(len(rows), 6, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return Segment(modality="text", tokens=tokens, lengths=torch.tensor([len(r) + 1 for r in rows]))


def test_cycle_score_is_the_summed_log_prob_of_the_whole_masked_image_given_the_caption():
    fake = model()
    image = images([[3, 3, 3, 3], [0, 7, 1, 6]])
    score = CycleReranker(fake).pair_scores(image, captions([[5, 6], [7]]))
    log_probs = (IMAGE_LOGITS + IMAGE_SHIFT).log_softmax(-1)  # every caption shows real tokens
    expected = [sum(log_probs[p, t] for p, t in enumerate(row)) for row in image.tokens.tolist()]
    assert torch.allclose(score, torch.tensor(expected))
    assert fake.masked_in(0, "image").all()  # the image: every token MASK
    assert not fake.masked_in(0, "text").any()  # the caption: shown in full
    assert fake.seen(0, "text")[0, :3].tolist() == [5, 6, 0]  # after BOC, T2I order: text before BOG


def test_cycle_score_batches_give_the_same_scores_and_mismatches_are_errors():
    image = images([[1, 2, 3, 4], [3, 3, 0, 0], [7, 7, 7, 7]])
    text = captions([[5], [6, 7], [8]])
    whole = CycleReranker(model()).pair_scores(image, text)
    assert torch.allclose(CycleReranker(model(), batch_size=2).pair_scores(image, text), whole)
    with pytest.raises(ValueError, match="cycle score: 3 images but 2 captions"):
        CycleReranker(model()).pair_scores(image, text.select(slice(0, 2)))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        CycleReranker(model(), batch_size=0)


def test_interleaved_sets_are_a_checkerboard_for_two_passes_and_coordinate_sums_mod_n():
    assert interleaved_sets((2, 3), passes=2).tolist() == [0, 1, 0, 1, 0, 1]
    assert interleaved_sets((2, 2), passes=3).tolist() == [0, 1, 1, 2]
    assert interleaved_sets((5,), passes=2).tolist() == [0, 1, 0, 1, 0]  # a 1-D modality alternates
    assert interleaved_sets((2, 2), passes=1).tolist() == [0, 0, 0, 0]


def test_two_pass_cycle_score_masks_a_checkerboard_each_pass_and_scores_every_token_once():
    fake = model()
    image = images([[3, 3, 3, 3], [0, 7, 1, 6]])
    score = CycleReranker(fake, passes=2).pair_scores(image, captions([[5, 6], [7]]))
    # The fake ignores the visible image tokens, so the sum equals the one-pass score.
    assert torch.allclose(score, CycleReranker(model()).pair_scores(image, captions([[5, 6], [7]])))
    assert len(fake.calls) == 2
    assert fake.masked_in(0, "image").tolist() == [[True, False, False, True]] * 2
    assert fake.masked_in(1, "image").tolist() == [[False, True, True, False]] * 2
    assert fake.seen(1, "image")[1, [0, 3]].tolist() == [0, 6]  # the other half shows the true codes
    with pytest.raises(ValueError, match="cycle score passes must be >= 1, got 0"):
        CycleReranker(fake, passes=0)


def test_best_in_groups_picks_each_groups_highest_row():
    scores = torch.tensor([0.1, 0.9, 0.2, 5.0, -1.0, 4.0])
    assert best_in_groups(scores, candidates=3).tolist() == [1, 3]
    assert best_in_groups(scores, candidates=2).tolist() == [1, 3, 5]
    assert best_in_groups(torch.tensor([2.0, 2.0, 1.0, 3.0, 3.0, 0.0]), candidates=3).tolist() == [0, 3]  # ties: first
    with pytest.raises(ValueError, match="6 rows do not split into groups of 4 candidates"):
        best_in_groups(scores, candidates=4)


def refiner(text_table: torch.Tensor, **options) -> CaptionRefiner:
    return CaptionRefiner(model(text_table), config=RefineConfig(**options))


def test_refinement_takes_the_captioners_likeliest_plausible_word_when_the_image_cannot_tell():
    # The fake's image logits ignore which words the caption holds, so every variant
    # has the same cycle score and the captioner's own belief decides.
    table = text_logits([[0, 0, 0, 0, 0, 3.0], [0, 0, 0, 0, 0, 0, 0, 3.0], [0, 0, 0, 0, 0, 0, 0, 0, 3.0]])
    two = refiner(table, sweeps=1, proposals=2, min_prob=0.0)
    refined = two.refine_captions(images([[0] * 4] * 2), captions([[1, 2, 3], [4]]))
    assert refined.tokens.tolist() == [[5, 7, 8, 0, 0, 0], [5, 0, 0, 0, 0, 0]]
    assert refined.lengths.tolist() == [4, 2]  # lengths kept: the second caption only had position 0


def test_refinement_never_proposes_eos_and_keeps_words_no_alternative_is_plausible_against():
    # Position 0: EOS (id 0) likeliest (p 0.99), then 6 (p 0.007); position 1: all ten words p 0.1.
    table = text_logits([[9.0, 0, 0, 0, 0, 0, 4.0], [0.0] * 10])
    caption = captions([[1, 2]])
    anything = refiner(table, sweeps=2, proposals=3, min_prob=0.0).refine_captions(images([[0] * 4]), caption)
    assert anything.tokens.tolist() == [[6, 2, 0, 0, 0, 0]]  # not EOS; a tie keeps the caption's word
    plausible = refiner(table, sweeps=2, proposals=3, min_prob=0.2).refine_captions(images([[0] * 4]), caption)
    assert plausible.tokens.tolist() == [[1, 2, 0, 0, 0, 0]]  # 6 is below min_prob, EOS is never offered


def test_refinement_with_min_prob_one_changes_nothing():
    table = text_logits([[0, 0, 0, 0, 0, 3.0], [0, 0, 0, 3.0]])
    caption = captions([[1, 2], [4, 4, 4]])
    refined = refiner(table, min_prob=1.0).refine_captions(images([[0] * 4] * 2), caption)
    assert torch.equal(refined.tokens, caption.tokens) and torch.equal(refined.lengths, caption.lengths)


class PairScorer:
    """Cycle score by hand: 0 for words (2, 3) at positions 1-2, 10 for (7, 8), -10 for anything else."""

    def __init__(self):
        self.rows = 0

    def pair_scores(self, image, text):
        self.rows += text.batch_size
        pair = text.tokens[:, 1:3].tolist()
        return torch.tensor([0.0 if p == [2, 3] else 10.0 if p == [7, 8] else -10.0 for p in pair])


def test_a_pair_move_changes_two_coupled_words_no_single_change_can():
    # Positions 1 and 2 each have one plausible alternative (7 and 8, p 0.45 > 0.2); position 0 none.
    table = text_logits([[0.0] * 10, [0, 0, 0, 0, 0, 0, 0, 2.0], [0, 0, 0, 0, 0, 0, 0, 0, 2.0]])
    caption = captions([[1, 2, 3]])
    single = CaptionRefiner(model(table), config=RefineConfig(min_prob=0.2, pair_distances=()), scorer=PairScorer())
    assert single.refine_captions(images([[0] * 4]), caption).tokens.tolist() == [[1, 2, 3, 0, 0, 0]]
    scorer = PairScorer()
    pairs = CaptionRefiner(model(table), config=RefineConfig(min_prob=0.2, pair_distances=(1,)), scorer=scorer)
    assert pairs.refine_captions(images([[0] * 4]), caption).tokens.tolist() == [[1, 7, 8, 0, 0, 0]]
    # Scored: the caption, then at position 1 the single variant (7 at 1) and the pair (7, 8); after
    # that no word has a plausible alternative, the second sweep scores nothing and the search stops.
    assert scorer.rows == 1 + 2


def test_only_plausible_variants_are_scored():
    table = text_logits([[0, 0, 0, 0, 0, 3.0], [0, 0, 0, 3.0]])  # one plausible word at 0 and 1
    scorer = PairScorer()
    refined = CaptionRefiner(model(table), config=RefineConfig(min_prob=0.5, sweeps=1), scorer=scorer)
    out = refined.refine_captions(images([[0] * 4] * 2), captions([[1, 2], [4, 4, 4]]))
    # The two captions, then at position 0 per row: 5 alone and the pair (5, 3) (the scorer ties them,
    # the pair's prior gain is larger). Position 1 then has nothing to propose, position 2 (p 0.1) neither,
    # and no pair reaches a word below min_prob.
    assert scorer.rows == 2 + 4
    assert out.tokens.tolist() == [[5, 3, 0, 0, 0, 0], [5, 3, 4, 0, 0, 0]]


def test_refine_and_rerank_options_are_checked():
    with pytest.raises(ValueError, match="sweeps: must be > 0, got 0"):
        RefineConfig(sweeps=0)
    with pytest.raises(ValueError, match=r"min_prob: must be in \[0, 1\], got 1.5"):
        RefineConfig(min_prob=1.5)
    with pytest.raises(ValueError, match="prior_weight: must be >= 0, got -1"):
        RefineConfig(prior_weight=-1)
    with pytest.raises(ValueError, match=r"pair_distances must be distinct and >= 1, got \[1, 0\]"):
        RefineConfig(pair_distances=[1, 0])
    with pytest.raises(ValueError, match=r"pair_distances must be distinct and >= 1, got \[2, 2\]"):
        RefineConfig(pair_distances=[2, 2])
    with pytest.raises(ValueError, match="passes: must be > 0, got 0"):
        RefineConfig(passes=0)
    with pytest.raises(ValueError, match="passes: must be > 0, got 0"):
        CycleReranker.Config(passes=0)
    with pytest.raises(ValueError, match="batch_size: must be > 0, got 0"):
        CycleReranker.Config(batch_size=0)

    def generate_config(data):
        return structure_attrs(GenerateStage.Config, data, registry=load_registry())

    # In a recipe the errors name their place.
    with pytest.raises(ConfigError, match="rerank.i2t.passes: must be > 0, got 0"):
        generate_config({"tasks": ["i2t"], "rerank": {"i2t": {"use": "cycle", "passes": 0}}})
    with pytest.raises(ConfigError, match="refine.i2t.sweeps: must be > 0, got 0"):
        generate_config({"tasks": ["i2t"], "refine": {"i2t": {"use": "caption_refine", "sweeps": 0}}})
    with pytest.raises(ConfigError, match=r"refine given for tasks not run: \['i2t'\]"):
        generate_config({"tasks": ["t2i"], "refine": {"i2t": "caption_refine"}})
    options = {"candidates": {"i2t": 8}, "rerank": {"i2t": "cycle"}, "refine": {"i2t": "caption_refine"}}
    ok = generate_config({"tasks": ["i2t"], **options})
    assert ok.rerank["i2t"].config == CycleReranker.Config() and ok.refine["i2t"].config == RefineConfig()


def test_reranker_and_refiner_are_built_by_name_with_the_model():
    registry = load_registry()
    fake = model()
    reranker = registry.build(structure_spec("rerankers", "cycle", path="rerank", registry=registry), model=fake)
    assert isinstance(reranker, CycleReranker) and reranker.model is fake
    assert (reranker.passes, reranker.batch_size, reranker.modalities) == (2, 256, ("image", "text"))  # the defaults
    data = {"use": "caption_refine", "passes": 1, "sweeps": 1, "min_prob": 0.5}
    refiner = registry.build(structure_spec("refiners", data, path="refine", registry=registry), model=fake)
    assert isinstance(refiner, CaptionRefiner) and refiner.model is fake and refiner.scorer.model is fake
    assert (refiner.config.sweeps, refiner.config.min_prob, refiner.scorer.passes) == (1, 0.5, 1)


def test_the_reranker_interface_scores_the_image_and_text_segments_it_names():
    image = images([[3, 3, 3, 3], [0, 7, 1, 6]])
    text = captions([[5, 6], [7]])
    reranker = CycleReranker(model(), passes=2)
    expected = reranker.pair_scores(image, text)
    assert torch.allclose(reranker.scores({"text": text, "image": image}), expected)  # by name, not order
    with pytest.raises(KeyError, match="image"):
        reranker.scores({"text": text})


def test_the_refiner_interface_refines_the_generated_caption_against_the_given_or_generated_image():
    # As in the first refinement test: position 0 prefers 5, 1 prefers 7, 2 prefers 8.
    table = text_logits([[0, 0, 0, 0, 0, 3.0], [0, 0, 0, 0, 0, 0, 0, 3.0], [0, 0, 0, 0, 0, 0, 0, 0, 3.0]])
    two = refiner(table, sweeps=1, proposals=2, min_prob=0.0)
    image, text = images([[0] * 4] * 2), captions([[1, 2, 3], [4]])
    expected = [[5, 7, 8, 0, 0, 0], [5, 0, 0, 0, 0, 0]]
    # I2T: the image is given, the caption generated.
    refined = two.refine({"image": image}, {"text": text})
    assert set(refined) == {"text"} and refined["text"].tokens.tolist() == expected
    assert torch.equal(refined["text"].lengths, text.lengths)
    # T2IT: both generated; the prompt (a given text) is not what is refined, and the image is kept.
    prompt = captions([[9], [9]])
    refined = two.refine({"text": prompt}, {"image": image, "text": text})
    assert set(refined) == {"image", "text"} and refined["image"] is image
    assert refined["text"].tokens.tolist() == expected
    with pytest.raises(ValueError, match="caption refinement needs a generated 'text' and an 'image'"):
        two.refine({"text": prompt}, {"image": image})  # T2I: no caption generated
    with pytest.raises(ValueError, match="refine: 2 images but 1 captions"):
        two.refine_captions(image, text.select(slice(0, 1)))
