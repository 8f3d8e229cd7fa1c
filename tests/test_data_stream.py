"""BatchStream: deterministic epochs, rank shards, workers, resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmgen.data_stream import BatchStream, epoch_permutation, rank_share


class EpochTagged:
    """Item i of epoch e is (e, i): shows which epoch a worker believed it was in."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.epoch = -1
        self.epochs_set: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, int]:
        return (self.epoch, index)


def take(stream: BatchStream, count: int) -> list[list]:
    return list(itertools.islice(stream, count))


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    order = epoch_permutation(10, seed=3, epoch=0)
    assert sorted(order.tolist()) == list(range(10))
    assert np.array_equal(order, epoch_permutation(10, seed=3, epoch=0))
    assert not np.array_equal(order, epoch_permutation(10, seed=3, epoch=1))
    assert not np.array_equal(order, epoch_permutation(10, seed=4, epoch=0))


def test_batches_follow_the_epoch_permutation_and_every_epoch_covers_the_dataset():
    stream = BatchStream(list(range(12)), batch_size=4, collate=list, seed=7)
    batches = take(stream, 6)
    for epoch in (0, 1):
        order = epoch_permutation(12, seed=7, epoch=epoch).tolist()
        assert batches[3 * epoch : 3 * epoch + 3] == [order[0:4], order[4:8], order[8:12]]
    assert stream.state_dict() == {"epoch": 1, "position": 3}


def test_drop_last_drops_the_partial_batch():
    stream = BatchStream(list(range(10)), batch_size=4, collate=list, seed=0)
    order = epoch_permutation(10, seed=0, epoch=0).tolist()
    assert stream.batches_per_epoch == 2
    assert take(stream, 3)[:2] == [order[0:4], order[4:8]]
    assert stream.state_dict() == {"epoch": 1, "position": 1}


def test_without_drop_last_the_last_batch_is_short():
    stream = BatchStream(list(range(10)), batch_size=4, collate=list, seed=0, drop_last=False)
    order = epoch_permutation(10, seed=0, epoch=0).tolist()
    assert take(stream, 3) == [order[0:4], order[4:8], order[8:10]]


def test_ranks_read_disjoint_shares_whose_union_is_the_single_process_batch():
    single = take(BatchStream(list(range(20)), batch_size=4, collate=list, seed=1), 10)
    ranks = [take(BatchStream(list(range(20)), batch_size=2, collate=list, seed=1, rank=r, world_size=2), 10) for r in (0, 1)]
    for k in range(10):
        assert set(ranks[0][k]).isdisjoint(ranks[1][k])
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(single[k])


def test_rank_share_pads_by_wrapping_when_not_dropping():
    order = np.array([5, 3, 1, 0, 2])
    assert rank_share(order, rank=0, world_size=2, drop_last=True).tolist() == [5, 1]
    assert rank_share(order, rank=1, world_size=2, drop_last=True).tolist() == [3, 0]
    assert rank_share(order, rank=0, world_size=2, drop_last=False).tolist() == [5, 1, 2]
    assert rank_share(order, rank=1, world_size=2, drop_last=False).tolist() == [3, 0, 5]


def test_zero_and_two_workers_yield_identical_batches_and_set_epoch_precedes_workers():
    plain = take(BatchStream(EpochTagged(10), batch_size=3, collate=list, seed=5), 7)
    dataset = EpochTagged(10)
    workers = take(BatchStream(dataset, batch_size=3, collate=list, seed=5, num_workers=2), 7)
    assert workers == plain
    # 3 batches per epoch: batches 0-2 come from epoch 0, 3-5 from 1, 6 from 2.
    assert [batch[0][0] for batch in workers] == [0, 0, 0, 1, 1, 1, 2]
    assert dataset.epochs_set == [0, 1, 2]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_state_dict_continues_at_the_next_batch(num_workers):
    reference = take(BatchStream(list(range(10)), batch_size=3, collate=list, seed=2), 9)
    first = BatchStream(list(range(10)), batch_size=3, collate=list, seed=2, num_workers=num_workers)
    assert take(first, 4) == reference[:4]
    state = first.state_dict()
    assert state == {"epoch": 1, "position": 1}
    first.close()
    resumed = BatchStream(list(range(10)), batch_size=3, collate=list, seed=2, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert take(resumed, 5) == reference[4:9]
    resumed.close()


def test_resume_at_the_end_of_an_epoch_rolls_over():
    reference = take(BatchStream(list(range(6)), batch_size=3, collate=list, seed=0), 3)
    stream = BatchStream(list(range(6)), batch_size=3, collate=list, seed=0)
    stream.load_state_dict({"epoch": 0, "position": 2})
    assert next(stream) == reference[2]
    assert stream.state_dict() == {"epoch": 1, "position": 1}


def test_too_small_dataset_is_an_error():
    with pytest.raises(ValueError, match="dataset of 5 items gives no full batch of 4 per rank with 2 rank"):
        BatchStream(list(range(5)), batch_size=4, collate=list, seed=0, world_size=2)
