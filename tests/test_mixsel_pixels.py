"""MixSel with the paper's pixel mixing: squeezed halves made by the cache stage, mixed grids, IT2IT's masked
context, captions that are never cut, and the halves files checked by DONE.json."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from mmgen.batch import Segment, TokenBatch
from mmgen.errors import ArtefactError
from mmgen.objectives.mixsel import HalvesError, MixSel, Mixture, half_grids, halves_extra
from mmgen.plugins.datasets.bpe_dropout import BpeDropout
from mmgen.plugins.datasets.cache_stage import CacheStage, TokenCache, cache_splits
from mmgen.plugins.datasets.data_stage import DataSplits
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.mixsel_halves import HalvesDataset, encode_halves, halves_paths
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.protocols import StepInput
from mmgen.stage_folder import mark_done, verify
from mmgen.tokenizers.vqgan.tokenizer import VQGANTokenizer

from objective_helpers import (
    I2T,
    IT2IT,
    T2I,
    caption_segment,
    image_segment,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_model,
    tiny_space,
)
from token_cache_helpers import BlockImageTokenizer, CharTokenizer

NO_DROPOUT = BpeDropout(variants=0)  # the stand-in character tokenizer has no BPE merges to drop


def split_images() -> torch.Tensor:
    """Image 0: black left half, white right half; image 1: black top half, white bottom half (32x32)."""
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[0, :, :, 16:] = 255
    images[1, :, 16:, :] = 255
    return images


def test_each_half_is_the_whole_image_squeezed_and_encoded():
    halves = encode_halves(BlockImageTokenizer(), split_images())  # 4x4 grid of 8x8-pixel blocks, 16 levels
    assert halves.shape == (2, 2, 8)
    # Image 0 squeezed to 32x16 keeps both its halves: each 4x2 row is black then white.
    assert halves[0, 0].reshape(4, 2).tolist() == [[0, 15]] * 4
    assert halves[0, 1].reshape(2, 4).tolist() == [[0, 0, 15, 15]] * 2  # squeezed to 16x32
    assert halves[1, 0].reshape(4, 2).tolist() == [[0, 0], [0, 0], [15, 15], [15, 15]]
    assert halves[1, 1].reshape(2, 4).tolist() == [[0, 0, 0, 0], [15, 15, 15, 15]]


def test_vqgan_halves_of_a_64_pixel_image_are_8x4_and_4x8_codes():
    tokenizer = VQGANTokenizer.from_config(VQGANTokenizer.Config(preset="shapes"))  # 64x64 pixels, 8x8 codes
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    halves = encode_halves(tokenizer, images)
    assert halves.shape == (2, 2, 32)
    narrow = torch.nn.functional.interpolate(images.float(), size=(64, 32), mode="bilinear", antialias=True)
    codes = tokenizer.encode_grid(narrow.round().clamp(0, 255).to(torch.uint8))
    assert codes.shape == (2, 8, 4) and np.array_equal(halves[:, 0], codes.flatten(1).numpy())


def test_a_grid_with_an_odd_side_has_no_halves():
    assert half_grids((8, 8)) == ((8, 4), (4, 8))
    message = (
        "MixSel pixel mixing: the 'image' grid 3x3 does not split into two halves of whole codes"
        " (each side must be even); use mixing: tokens_resize"
    )
    with pytest.raises(HalvesError, match=f"^{re.escape(message)}$"):
        MixSel(token_space=tiny_space(image_shape=(3, 3)), separators={"text": (9,)})
    MixSel(token_space=tiny_space(image_shape=(3, 3)), separators={"text": (9,)}, mixing="tokens_resize")


# ---- the mixed grid ---------------------------------------------------------------------------------------


def halves_batch() -> TokenBatch:
    """Three pairs; row b's half-width grid (4x2) holds 10 b + 0..7 and its half-height grid (2x4) 10 b + 0..7 + 50."""
    base = torch.arange(8)
    halves = torch.stack([torch.stack([10 * b + base, 10 * b + base + 50]) for b in range(3)])
    images = image_segment([[b] * 16 for b in range(3)])
    return TokenBatch(segments=(images, caption_segment([[5], [1, 2], [3]])), extras={halves_extra("image"): halves})


def pixel_mixsel(**options) -> MixSel:
    return MixSel(token_space=tiny_space(image_vocab=128), separators={"text": (9,)}, **options)


def image_halves(batch: TokenBatch) -> dict[str, torch.Tensor]:
    return {"image": batch.extras[halves_extra("image")]}


def segments_of(batch: TokenBatch) -> dict[str, Segment]:
    return {"image": batch.modality("image"), "text": batch.modality("text")}


def test_pixel_mixing_joins_the_half_grids_side_by_side_and_stacked():
    space = tiny_space(image_vocab=128)
    batch = halves_batch()
    mixture = Mixture(
        partner=torch.tensor([1, 2, 0]),
        own_second=torch.tensor([False, True, False]),
        stacked=torch.tensor([False, False, True]),
    )
    packed, _, _ = pixel_mixsel().sequence(
        I2T, segments_of(batch), mixture, generator=torch.Generator().manual_seed(0), halves=image_halves(batch)
    )
    grids = (packed.tokens[:, 2:18] - space.offset("image")).view(3, 4, 4).tolist()
    # Row 0: own (0) left, partner 1 right; each 4x2 half-width grid row by row.
    assert grids[0] == [[0, 1, 10, 11], [2, 3, 12, 13], [4, 5, 14, 15], [6, 7, 16, 17]]
    # Row 1: partner 2 left, own (1) right.
    assert grids[1] == [[20, 21, 10, 11], [22, 23, 12, 13], [24, 25, 14, 15], [26, 27, 16, 17]]
    # Row 2: own (2) on top, partner 0 below; each 2x4 half-height grid.
    assert grids[2] == [[70, 71, 72, 73], [74, 75, 76, 77], [50, 51, 52, 53], [54, 55, 56, 57]]
    assert packed.tokens[:, 18].tolist() == [space.special(n) for n in ("BOG_LEFT", "BOG_RIGHT", "BOG_TOP")]


def test_pixel_mixing_needs_the_batch_to_carry_halves():
    batch = halves_batch()
    bare = TokenBatch(segments=batch.segments)
    with pytest.raises(HalvesError, match="^MixSel pixel mixing: the batch has no squeezed 'image' halves; build"):
        inputs = StepInput(batch=bare, task=I2T, generator=torch.Generator())
        pixel_mixsel()(tiny_model(tiny_space(image_vocab=128)), inputs)


def test_it2it_masks_and_predicts_only_the_selected_half_of_the_mixed_image():
    space = tiny_space(image_vocab=128)
    batch = halves_batch()
    mixture = Mixture(
        partner=torch.tensor([1, 2, 0]),
        own_second=torch.tensor([False, True, True]),
        stacked=torch.tensor([False, False, True]),
    )
    packed, truth, masks = pixel_mixsel().sequence(
        IT2IT, segments_of(batch), mixture, generator=torch.Generator().manual_seed(5), halves=image_halves(batch)
    )
    assert set(masks) == {"image", "text"}
    image = masks["image"].view(3, 4, 4)
    assert not image[0, :, 2:].any() and not image[1, :, :2].any() and not image[2, :2].any()  # own halves only
    r = torch.rand(3, generator=torch.Generator().manual_seed(5))
    ratio = torch.cos(math.pi / 2 * r)
    assert masks["image"].sum(dim=1).tolist() == (ratio * 8).floor().clamp(1, 8).long().tolist()  # the authors' floor
    assert masks["text"].sum(dim=1).tolist() == (r * batch.modality("text").lengths).ceil().clamp(min=1).long().tolist()
    mixed = truth["image"].tokens
    assert mixed[0].view(4, 4)[0].tolist() == [0, 1, 10, 11]  # the truth is the mixed grid
    shown = packed.tokens[:, 2:18] - space.offset("image")
    assert torch.equal(shown[~masks["image"]], mixed[~masks["image"]])
    assert (packed.tokens[:, 2:18][masks["image"]] == space.mask_id("image")).all()


def test_the_step_is_deterministic_under_its_seed():
    model = tiny_model(tiny_space(image_vocab=128))
    objective = pixel_mixsel()

    def loss(seed: int, task) -> float:
        inputs = StepInput(batch=halves_batch(), task=task, generator=torch.Generator().manual_seed(seed))
        return objective(model, inputs).loss.item()

    for task in (I2T, IT2IT, T2I):
        assert loss(3, task) == loss(3, task)
    assert loss(3, IT2IT) != loss(4, IT2IT)


# ---- captions are never cut -------------------------------------------------------------------------------


def caption_batch() -> TokenBatch:
    """Caption lengths with end-of-text 5, 2, 4, 2; two joined take n1 + n2 tokens (separator for one EOS)."""
    captions = caption_segment([[1, 2, 3, 4], [5], [6, 7, 8], [3]])
    images = image_segment([[b] * 16 for b in range(4)])
    return TokenBatch(segments=(images, captions))


def test_a_pair_too_long_to_join_takes_the_next_partner_that_fits_or_leaves_the_loss():
    objective = MixSel(token_space=tiny_space(), separators={"text": (9,)}, mixing="tokens_resize")
    drawn = Mixture(
        partner=torch.tensor([1, 0, 3, 0]),
        own_second=torch.zeros(4, dtype=torch.bool),
        stacked=torch.zeros(4, dtype=torch.bool),
    )
    segments = segments_of(caption_batch())
    fitted, counts = objective.fit_captions(T2I, segments, drawn)
    # Row 0 (5 tokens) fits with nobody; row 1 drew 0 (offset 3): offsets 3, 1, 2 give rows 0, 2, 3 -> 2 fits;
    # row 2 keeps 3; row 3 drew 0 (offset 1): 0 no, 1 yes.
    assert fitted.rows().tolist() == [1, 2, 3] and fitted.partner.tolist() == [2, 3, 1]
    assert counts == {"repartnered": 2, "unmixed": 1}
    packed, targets, _ = objective.sequence(T2I, segments, fitted, generator=torch.Generator().manual_seed(0))
    text = (packed.tokens[:, 2:8] - packed.tokens.new_tensor(tiny_space().offset("text"))).tolist()
    assert text == [[5, 9, 6, 7, 8, 0], [6, 7, 8, 9, 3, 0], [3, 9, 5, 0, 0, 0]]  # whole, each ending with EOS
    assert targets["image"].tokens[:, 0].tolist() == [1, 2, 3]  # each row's own image
    out = objective(tiny_model(), StepInput(batch=caption_batch(), task=T2I, generator=torch.Generator()))
    assert out.metrics["unmixed"] == 1.0


def test_when_no_caption_fits_the_loss_is_a_zero_that_reaches_the_model():
    long = TokenBatch(
        segments=(image_segment([[0] * 16, [1] * 16]), caption_segment([[1, 2, 3, 4], [5, 6, 7]])),
    )
    model = tiny_model()
    objective = MixSel(token_space=tiny_space(), separators={"text": (9,)}, mixing="tokens_resize")
    out = objective(model, StepInput(batch=long, task=T2I, generator=torch.Generator().manual_seed(0)))
    assert out.loss.item() == 0.0 and out.metrics == {"repartnered": 0.0, "unmixed": 2.0}
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ---- the cache stage's halves files -----------------------------------------------------------------------


@pytest.fixture()
def cache_folder(tmp_path):
    shapes = ShapesDataset(size=32, counts={"train": 5, "val": 2})
    for split in ("train", "val"):
        ingest(dataset_candidates(shapes, split), tmp_path / "data" / f"{split}.lmdb", progress=False)
    tokenizers = {"image": BlockImageTokenizer(), "text": CharTokenizer()}
    folder = tmp_path / "cache"
    folder.mkdir()
    cache_splits(DataSplits(tmp_path / "data"), folder, tokenizers=tokenizers, config=CacheStage.Config(bpe_dropout=NO_DROPOUT))
    return folder, tokenizers


def test_the_cache_stage_writes_the_train_halves_and_batches_carry_them(cache_folder, tmp_path):
    folder, tokenizers = cache_folder
    codes_path, info_path = halves_paths(folder / "train.lmdb", "image")
    assert codes_path.name == "train.image.mixsel_halves.npy" and info_path.is_file()
    assert not halves_paths(folder / "val.lmdb", "image")[0].exists()  # MixSel trains on train only
    store = [r for r in dataset_candidates(ShapesDataset(size=32, counts={"train": 5}), "train")]
    codes = np.load(codes_path, allow_pickle=False)
    assert codes.shape == (5, 2, 8)
    image = tokenizers["image"].load_item(store[3].data)[None]
    assert np.array_equal(codes[3], encode_halves(tokenizers["image"], image)[0])
    train = TokenCache(folder).split("train", tokenizers=tokenizers)
    assert isinstance(train, HalvesDataset) and len(train) == 5 and train.modalities == ("image", "text")
    batch = train.collate(train.__getitems__([4, 1]))
    assert torch.equal(batch.extras[halves_extra("image")], torch.from_numpy(codes[[4, 1]].astype(np.int64)))
    assert not isinstance(TokenCache(folder).split("val"), HalvesDataset)
    off = tmp_path / "off"
    off.mkdir()
    config = CacheStage.Config(mixsel_halves=False, bpe_dropout=NO_DROPOUT)
    cache_splits(DataSplits(tmp_path / "data"), off, tokenizers=tokenizers, config=config)
    assert sorted(p.name for p in off.iterdir()) == ["train.lmdb", "val.lmdb"]


def test_done_json_hashes_the_halves_files(cache_folder):
    folder, _ = cache_folder
    mark_done(folder, key="cache", use="cache", digest="abc", seconds=1.0)
    verify(folder)
    codes_path, _ = halves_paths(folder / "train.lmdb", "image")
    data = bytearray(codes_path.read_bytes())
    data[-1] ^= 1
    codes_path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=r"train\.image\.mixsel_halves\.npy: content does not match"):
        verify(folder)
