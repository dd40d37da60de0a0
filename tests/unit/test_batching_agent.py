"""Masks of agent rows in every layout: only the masked tokens are gathered (tool results never train,
earlier assistant turns do under train_on=all_assistant); padded == shared == packed, and each equals the
per-token log-probs of a plain forward summed over the masked positions."""

import pytest
import torch
from agent_rows import ROW  # a three-turn trajectory with a tool result inside chosen

from preftune.batching import (
    collate_pairs_packed,
    collate_pairs_padded,
    collate_pairs_shared,
    collate_sequences_packed,
    collate_sequences_padded,
    num_train_tokens,
    train_positions,
)
from preftune.models import load_policy, load_tokenizer
from preftune.models.forward import pair_logps, sequence_logps
from preftune.tokenize import PairTokens, SequenceTokens, tokenize_pairs

TOL = {"atol": 1e-4, "rtol": 1e-4}


def test_train_positions_by_hand():
    assert train_positions(3, None, 2, None) == [3, 4]
    assert train_positions(3, None, 3, [1, 0, 1]) == [3, 5]
    assert train_positions(3, [1, 1, 0], 2, [0, 1]) == [1, 4]  # position 0 is never predicted
    assert num_train_tokens(SequenceTokens([1, 2], [3, 4, 5], False, 0, [0, 1], [1, 0, 0])) == 2


def test_padded_and_shared_gather_exactly_the_masked_tokens():
    it = PairTokens([10, 11, 12], [20, 21, 22], [30, 31], False, 0, prompt_mask=[0, 1, 0], chosen_mask=[1, 0, 1],
                    rejected_mask=[0, 1])
    pad = collate_pairs_padded([it], pad_id=0)
    assert pad.gather_labels.tolist() == [11, 20, 22, 11, 31]
    assert pad.gather_segment.tolist() == [0, 0, 0, 1, 1]
    width = pad.input_ids.shape[1]  # rows: [10 11 12 20 21 22], [10 11 12 30 31 0]
    assert pad.gather_index.tolist() == [0, 2, 4, width + 0, width + 3]
    sh = collate_pairs_shared([it], pad_id=0)  # one row: 10 11 12 | 20 21 22 | 30 31
    assert sh.gather_labels.tolist() == [11, 20, 22, 11, 31]
    assert sh.gather_index.tolist() == [0, 2, 4, 0, 6]  # 31 is predicted by 30 (index 6), 30 sits after chosen


@pytest.fixture(scope="module")
def agent_items():
    tok = load_tokenizer("tiny-llama")
    plain = {"prompt": "Hi", "chosen": "Hello there.", "rejected": "Go."}
    items = {on: tokenize_pairs([ROW, plain], tok, 1024, train_on=on)[0] for on in ("chosen_only", "all_assistant")}
    return tok, items


@pytest.mark.parametrize("train_on", ["chosen_only", "all_assistant"])
def test_layouts_agree_with_a_plain_forward_over_the_masked_tokens(agent_items, train_on):
    tok, items = agent_items
    items = items[train_on]
    model = load_policy("tiny-llama").eval()
    with torch.no_grad():
        shared = pair_logps(model, collate_pairs_shared(items, tok.pad_token_id))
        padded = pair_logps(model, collate_pairs_padded(items, tok.pad_token_id), layout="padded")
        packed = pair_logps(model, collate_pairs_packed(items, tok.pad_token_id, max_tokens=4096))
        seqs = [SequenceTokens(it.prompt_ids, it.chosen_ids, False, i, it.prompt_mask, it.chosen_mask)
                for i, it in enumerate(items)]
        seq_pad = sequence_logps(model, collate_sequences_padded(seqs, tok.pad_token_id, "left"))
        seq_pack = sequence_logps(model, collate_sequences_packed(seqs, tok.pad_token_id, max_tokens=4096))
        oracle, counts = [], []
        for it in items:
            for resp, mask in ((it.chosen_ids, it.chosen_mask), (it.rejected_ids, it.rejected_mask)):
                ids = torch.tensor([it.prompt_ids + resp])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                pos = train_positions(len(it.prompt_ids), it.prompt_mask, len(resp), mask)
                oracle.append(sum(logp[t - 1, ids[0, t]] for t in pos))
                counts.append(len(pos))
    B = len(items)
    want_c, want_r = torch.stack(oracle[0::2]), torch.stack(oracle[1::2])
    for out in (shared, padded, packed):
        torch.testing.assert_close(out.chosen_logps, want_c, **TOL)
        torch.testing.assert_close(out.rejected_logps, want_r, **TOL)
        assert out.num_chosen_tokens.tolist() == counts[0::2] and out.num_rejected_tokens.tolist() == counts[1::2]
    for out in (seq_pad, seq_pack):
        torch.testing.assert_close(out.logps, want_c, **TOL)
    # the agent row trains fewer chosen tokens than it has (its tool result), the plain row all of them
    assert counts[0] < len(items[0].chosen_ids) + (sum(items[0].prompt_mask) if train_on == "all_assistant" else 0)
    assert counts[2] == len(items[1].chosen_ids) and B == 2
