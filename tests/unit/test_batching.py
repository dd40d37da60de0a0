"""Batching: length grouping invariants, padded / prefix-shared / packed layouts checked by hand."""

import random

import pytest
import torch

from preftune.batching import (
    collate_pairs_packed,
    collate_pairs_padded,
    collate_pairs_shared,
    collate_sequences_packed,
    collate_sequences_padded,
    length_grouped_batches,
    pair_length,
)
from preftune.tokenize import PairTokens, SequenceTokens

PAD = 0


def _items():
    # prompt, chosen, rejected of lengths (2, 2, 3) and (3, 1, 2)
    return [PairTokens([11, 12], [21, 22], [31, 32, 33], False, 7),
            PairTokens([13, 14, 15], [23], [34, 35], True, 9)]


def test_length_grouped_batches_invariants():
    rng = random.Random(0)
    lengths = [rng.randint(1, 500) for _ in range(1003)]
    batches = length_grouped_batches(lengths, 8, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1003))  # every index exactly once
    assert batches == length_grouped_batches(lengths, 8, seed=3)          # deterministic
    assert batches != length_grouped_batches(lengths, 8, seed=4)
    assert sum(len(b) < 8 for b in batches) <= 3  # one short batch per mega-batch at most
    # grouping cuts padding: padded tokens far below those of random batches of the same size
    def waste(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)
    order = list(range(1003))
    rng.shuffle(order)
    assert waste(batches) < 0.1 * waste([order[i:i + 8] for i in range(0, 1003, 8)])
    dropped = length_grouped_batches(lengths, 8, seed=3, drop_last=True)
    assert all(len(b) == 8 for b in dropped) and len(dropped) == sum(len(b) == 8 for b in batches)
    plain = length_grouped_batches([3, 1, 2, 5], 2, seed=0, shuffle=False)
    assert plain == [[3, 0], [2, 1]]
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches(lengths, 0, seed=0)


def test_padded_right_by_hand():
    b = collate_pairs_padded(_items(), PAD, "right")
    assert b.input_ids.tolist() == [[11, 12, 21, 22, 0], [13, 14, 15, 23, 0],
                                    [11, 12, 31, 32, 33], [13, 14, 15, 34, 35]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1] * 5, [1] * 5]
    assert b.completion_mask.long().tolist() == [[0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert b.num_pad_tokens == 2 and b.num_pairs == 2 and b.indices == [7, 9] and b.token_type_ids is None
    # each gathered position predicts the next token
    flat = b.input_ids.reshape(-1)
    assert torch.equal(flat[b.gather_index + 1], b.gather_labels)
    assert b.gather_labels.tolist() == [21, 22, 23, 31, 32, 33, 34, 35]
    assert b.gather_segment.tolist() == [0, 0, 1, 2, 2, 2, 3, 3]
    assert b.last_index.tolist() == [3, 8, 14, 19]


def test_padded_left_and_encoder_types():
    b = collate_pairs_padded(_items(), PAD, "left")
    assert b.input_ids[0].tolist() == [0, 11, 12, 21, 22]
    assert b.position_ids[0].tolist() == [0, 0, 1, 2, 3]
    enc = collate_pairs_padded(_items(), PAD, "right", encoder=True)
    assert enc.token_type_ids.tolist()[:2] == [[0, 0, 1, 1, 0], [0, 0, 0, 1, 0]]
    assert torch.equal(b.input_ids.reshape(-1)[b.gather_index + 1], b.gather_labels)
    assert b.last_index.tolist() == [4, 9, 14, 19]  # left padding: every row ends at the last column
    with pytest.raises(ValueError, match="padding_side"):
        collate_pairs_padded(_items(), PAD, "middle")


def test_pair_length_per_layout_by_hand():
    a, b = _items()  # (p, c, r) = (2, 2, 3) and (3, 1, 2)
    assert [pair_length(a, lay) for lay in ("shared", "packed", "padded", "unpadded")] == [7, 7, 10, 9]
    assert [pair_length(b, lay) for lay in ("shared", "packed", "padded", "unpadded")] == [6, 6, 10, 9]


def test_shared_by_hand():
    b = collate_pairs_shared(_items(), PAD)
    assert b.input_ids.tolist() == [[11, 12, 21, 22, 31, 32, 33], [13, 14, 15, 23, 34, 35, 0]]
    # rejected positions continue from the prompt's end, like chosen's
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 2, 3, 4], [0, 1, 2, 3, 3, 4, 0]]
    m = b.attention_mask[0, 0].long().tolist()
    assert m == [[1, 0, 0, 0, 0, 0, 0],
                 [1, 1, 0, 0, 0, 0, 0],
                 [1, 1, 1, 0, 0, 0, 0],
                 [1, 1, 1, 1, 0, 0, 0],
                 [1, 1, 0, 0, 1, 0, 0],   # rejected sees the prompt, never chosen
                 [1, 1, 0, 0, 1, 1, 0],
                 [1, 1, 0, 0, 1, 1, 1]]
    assert b.attention_mask[1, 0, 6].long().tolist() == [0, 0, 0, 0, 0, 0, 1]  # a pad sees only itself
    assert b.gather_labels.tolist() == [21, 22, 31, 32, 33, 23, 34, 35]
    # chosen 21 predicted at the prompt's end (1), rejected 31 too; later tokens by their predecessor
    assert b.gather_index.tolist() == [1, 2, 1, 4, 5, 7 + 2, 7 + 2, 7 + 4]
    assert b.gather_segment.tolist() == [0, 0, 2, 2, 2, 1, 3, 3]
    assert b.last_index.tolist() == [3, 7 + 3, 6, 7 + 5]
    assert b.chosen_mask.long().tolist()[0] == [0, 0, 1, 1, 0, 0, 0]
    assert b.rejected_mask.long().tolist()[1] == [0, 0, 0, 0, 1, 1, 0]
    assert b.num_pad_tokens == 1 and b.num_pairs == 2


def test_packed_rows_keep_pairs_apart():
    items = _items() + [PairTokens([16], [24, 25], [36], False, 11)]
    b = collate_pairs_packed(items, PAD, max_tokens=12)
    # first-fit decreasing: 7 + 6 > 12 opens a second row; the 4-token pair fits after the 7-token one
    assert b.input_ids.tolist() == [[11, 12, 21, 22, 31, 32, 33, 16, 24, 25, 36], [13, 14, 15, 23, 34, 35] + [0] * 5]
    flat = b.input_ids.reshape(-1)
    # every pair's tokens appear once, and each pair's segments never see another pair
    assert sorted(b.gather_segment.tolist()) == [0, 0, 1, 2, 2, 3, 3, 3, 4, 4, 5]
    assert flat[b.last_index].tolist() == [22, 23, 25, 33, 35, 36]
    shared = collate_pairs_shared(items, PAD)
    assert b.gather_labels.sort().values.tolist() == shared.gather_labels.sort().values.tolist()
    row = b.attention_mask[0, 0]
    assert not row[7:, :7].any() and row[7, 7]  # the second pair of a row never sees the first
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 2, 3, 4, 0, 1, 2, 1]
    assert b.num_pad_tokens == 5 and shared.input_ids.shape[0] == 3


def test_sequences_padded():
    items = [SequenceTokens([1, 2], [3], False, 0), SequenceTokens([4], [5, 6, 7], False, 1)]
    b = collate_sequences_padded(items, PAD, "left")
    assert b.input_ids.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert b.gather_labels.tolist() == [3, 5, 6, 7] and b.gather_segment.tolist() == [0, 1, 1, 1]
    assert torch.equal(b.input_ids.reshape(-1)[b.gather_index + 1], b.gather_labels)
    assert b.last_index.tolist() == [3, 7] and b.num_pad_tokens == 1 and b.num_sequences == 2


def test_sequences_packed_by_hand():
    items = [SequenceTokens([1, 2], [3], False, 0), SequenceTokens([4], [5, 6, 7], False, 1),
             SequenceTokens([8], [9], False, 2)]
    b = collate_sequences_packed(items, PAD, max_tokens=6)
    assert b.input_ids.tolist() == [[4, 5, 6, 7, 8, 9], [1, 2, 3, 0, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]]
    m = b.attention_mask[0, 0].long().tolist()
    assert m[4] == [0, 0, 0, 0, 1, 0] and m[5] == [0, 0, 0, 0, 1, 1] and m[3] == [1, 1, 1, 1, 0, 0]
    assert torch.equal(b.input_ids.reshape(-1)[b.gather_index + 1], b.gather_labels)
    assert b.gather_segment.tolist() == [1, 1, 1, 2, 0]
    assert b.last_index.tolist() == [8, 3, 5] and b.num_pad_tokens == 3
