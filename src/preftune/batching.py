"""Batching: length grouping, the padded pair layout, the prefix-shared pair layout and its packed variant.

Shapes: B pairs (or sequences), R rows, T tokens, N completion tokens in the batch.

Every batch carries the same three flat "gather" tensors, so one forward helper serves every layout:
`gather_index` (N,) is the flat index into (rows * T) of the hidden state that PREDICTS each completion
token (the position just before it, or the prompt's last token for a response's first token),
`gather_labels` (N,) is that token, `gather_segment` (N,) says whose it is (pair b's chosen = b,
its rejected = B + b; for sequences, sequence b = b). `last_index` gives the flat position of the
last real token of each response (chosen first, then rejected): where a reward model reads its score.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

from preftune.tokenize import PairTokens, SequenceTokens

if TYPE_CHECKING:
    from torch import Tensor

PADDING_SIDES = ("left", "right")


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                           drop_last: bool = False, mega_batch_mult: int = 50) -> list[list[int]]:
    """Batches of indices with similar lengths, so that little padding is computed.

    With shuffle: a seeded permutation is cut into mega-batches of `mega_batch_mult` batches, each
    mega-batch is sorted by length (longest first) and cut into batches, and the batch order is
    shuffled: random but length-homogeneous. Without shuffle: one global sort (evaluation).
    Every index appears exactly once (except the short last batch when drop_last).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
        mega = batch_size * mega_batch_mult
        groups = [order[i:i + mega] for i in range(0, len(order), mega)]
    else:
        groups = [order]
    batches = []
    for g in groups:
        g = sorted(g, key=lambda i: -lengths[i])  # stable: ties keep the permutation's order
        batches += [g[i:i + batch_size] for i in range(0, len(g), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    if shuffle:
        rng.shuffle(batches)
    return batches


def train_positions(prompt_len: int, prompt_mask: list[int] | None, response_len: int,
                    response_mask: list[int] | None) -> list[int]:
    """Positions of prompt + response whose tokens train: the response's by default; with the masks of
    agent rows (tokenize.py) only the masked ones (tool results drop out, earlier assistant turns of the
    prompt come in under train_on=all_assistant). Position 0 has nothing to predict it."""
    if prompt_mask is None and response_mask is None:
        return list(range(prompt_len, prompt_len + response_len))
    pm = prompt_mask if prompt_mask is not None else [0] * prompt_len
    rm = response_mask if response_mask is not None else [1] * response_len
    return [t for t, m in enumerate(pm + rm) if m and t >= 1]


def num_train_tokens(item: SequenceTokens) -> int:
    """How many tokens of one sequence train (its completion's, unless masks say otherwise)."""
    return len(train_positions(len(item.prompt_ids), item.prompt_mask, len(item.completion_ids), item.completion_mask))


def pair_length(item: PairTokens, layout: str = "shared") -> int:
    """Tokens a pair costs: prompt + chosen + rejected when shared (or packed), two rows as wide as the
    longer side when padded, both full sequences when unpadded (encoders run row by row)."""
    p, c, r = len(item.prompt_ids), len(item.chosen_ids), len(item.rejected_ids)
    if layout == "padded":
        return 2 * (p + max(c, r))
    return 2 * p + c + r if layout == "unpadded" else p + c + r


def to_device(batch: Any, device) -> Any:
    """A copy of a batch dataclass with every tensor field (nested batches too) on `device`;
    on CPU the batch itself. The one way a batch moves, for every stage."""
    if str(device) == "cpu" or not is_dataclass(batch):
        return batch
    moved = {}
    for f in fields(batch):
        v = getattr(batch, f.name)
        if is_dataclass(v):
            v = to_device(v, device)
        elif hasattr(v, "to") and hasattr(v, "device"):
            v = v.to(device, non_blocking=True)
        moved[f.name] = v
    return replace(batch, **moved)


@dataclass
class PairBatch:
    """Padded layout: 2B rows, chosen sequences (prompt + chosen) in rows 0..B-1, rejected in B..2B-1."""
    input_ids: Tensor             # (2B, T) long
    attention_mask: Tensor        # (2B, T) long, 1 = real token
    position_ids: Tensor          # (2B, T) long, 0 at each sequence's first real token
    completion_mask: Tensor       # (2B, T) bool, True on response tokens
    token_type_ids: Tensor | None # (2B, T) long (0 prompt, 1 response) for encoders, else None
    gather_index: Tensor          # (N,) long, flat index into (2B * T)
    gather_labels: Tensor         # (N,) long
    gather_segment: Tensor        # (N,) long in [0, 2B)
    last_index: Tensor            # (2B,) long, flat index of each sequence's last real token
    num_pairs: int
    num_pad_tokens: int
    indices: list[int]    # PairTokens.index of each pair


@dataclass
class SharedPairBatch:
    """Prefix-shared layout: each pair is [prompt | chosen | rejected] in one row (packed: several per row).

    Rejected positions continue from the prompt's end like chosen's; the block mask lets rejected
    see the prompt and itself but never chosen. Pads attend only to themselves (no empty softmax rows).
    """
    input_ids: Tensor             # (R, T) long
    position_ids: Tensor          # (R, T) long
    attention_mask: Tensor        # (R, 1, T, T) bool, True = query may attend to key
    chosen_mask: Tensor           # (R, T) bool, True on chosen tokens
    rejected_mask: Tensor         # (R, T) bool, True on rejected tokens
    gather_index: Tensor          # (N,) long, flat index into (R * T)
    gather_labels: Tensor         # (N,) long
    gather_segment: Tensor        # (N,) long in [0, 2B)
    last_index: Tensor            # (2B,) long, flat index of the last chosen / rejected token
    num_pairs: int
    num_pad_tokens: int
    indices: list[int]
    token_type_ids: Tensor | None = None  # never set: encoders cannot share a prefix (they see the whole row)


@dataclass
class SequenceBatch:
    """Single sequences (SFT, KTO, scoring): B rows of prompt + completion, padded; or, from
    collate_sequences_packed, R rows each holding several sequences that never see each other
    (a block-diagonal causal 4D mask, positions restarting at 0 for each sequence)."""
    input_ids: Tensor             # (B, T) long; packed: (R, T)
    attention_mask: Tensor        # (B, T) long; packed: (R, 1, T, T) bool, True = query may attend to key
    position_ids: Tensor          # (B, T) long; packed: (R, T)
    completion_mask: Tensor       # (B, T) bool; packed: (R, T)
    token_type_ids: Tensor | None # (B, T) long for encoders, else None
    gather_index: Tensor          # (N,) long, flat index into (rows * T)
    gather_labels: Tensor         # (N,) long
    gather_segment: Tensor        # (N,) long in [0, B)
    last_index: Tensor            # (B,) long, flat index of each sequence's last token
    num_sequences: int
    num_pad_tokens: int
    indices: list[int]


def _pad_rows(seqs: list[tuple[list[int], int, list[int]]], pad_id: int, padding_side: str, encoder: bool):
    """Pad (ids, prompt_len, train positions) sequences; returns the tensors of a padded batch (gather
    segment = row)."""
    import torch

    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if encoder and padding_side == "left":
        raise ValueError("encoders pool their first token ([CLS]), which left padding would make a pad: "
                         "use padding_side='right'")
    rows, width = len(seqs), max(len(s) for s, _, _ in seqs)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    pos = torch.zeros((rows, width), dtype=torch.long)
    comp = torch.zeros((rows, width), dtype=torch.bool)
    types = torch.zeros((rows, width), dtype=torch.long) if encoder else None
    g_index, g_labels, g_segment, last = [], [], [], []
    for row, (s, p, train) in enumerate(seqs):
        off = width - len(s) if padding_side == "left" else 0
        n = len(s)
        assert p >= 1, "a sequence needs at least one prompt token to predict its first response token"
        ids[row, off:off + n] = torch.tensor(s, dtype=torch.long)
        mask[row, off:off + n] = 1
        pos[row, off:off + n] = torch.arange(n)
        comp[row, [off + t for t in train]] = True
        if types is not None:
            types[row, off + p:off + n] = 1
        base = row * width + off
        g_index += [base + t - 1 for t in train]  # position t - 1 predicts token t
        g_labels += [s[t] for t in train]
        g_segment += [row] * len(train)
        last.append(base + n - 1)
    t = torch.tensor
    return (ids, mask, pos, comp, types, t(g_index, dtype=torch.long), t(g_labels, dtype=torch.long),
            t(g_segment, dtype=torch.long), t(last, dtype=torch.long), rows * width - int(mask.sum()))


def collate_pairs_padded(items: list[PairTokens], pad_id: int, padding_side: str = "right",
                         encoder: bool = False) -> PairBatch:
    """2B padded rows: prompt + chosen for each pair, then prompt + rejected (encoders: token_type_ids)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    seqs = [(it.prompt_ids + it.chosen_ids, len(it.prompt_ids),
             train_positions(len(it.prompt_ids), it.prompt_mask, len(it.chosen_ids), it.chosen_mask)) for it in items]
    seqs += [(it.prompt_ids + it.rejected_ids, len(it.prompt_ids),
              train_positions(len(it.prompt_ids), it.prompt_mask, len(it.rejected_ids), it.rejected_mask))
             for it in items]
    ids, mask, pos, comp, types, gi, gl, gs, last, pad = _pad_rows(seqs, pad_id, padding_side, encoder)
    return PairBatch(ids, mask, pos, comp, types, gi, gl, gs, last, len(items), pad, [it.index for it in items])


def collate_sequences_padded(items: list[SequenceTokens], pad_id: int, padding_side: str = "right",
                             encoder: bool = False) -> SequenceBatch:
    """B padded rows of prompt + completion."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    seqs = [(it.prompt_ids + it.completion_ids, len(it.prompt_ids),
             train_positions(len(it.prompt_ids), it.prompt_mask, len(it.completion_ids), it.completion_mask))
            for it in items]
    ids, mask, pos, comp, types, gi, gl, gs, last, pad = _pad_rows(seqs, pad_id, padding_side, encoder)
    return SequenceBatch(ids, mask, pos, comp, types, gi, gl, gs, last, len(items), pad, [it.index for it in items])


def _pack_rows(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """First-fit decreasing: item positions grouped into rows of at most max_tokens (a longer item alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_tokens - lengths[i])
    return rows


def _block_mask(unit, part):
    """(R, T) unit ids (0 = pad) and parts (0 pad, 1 prompt, 2+ a response) -> (R, 1, T, T) bool mask:
    a query sees, causally, its own unit's prompt and its own response; a pad sees only itself."""
    import torch

    width = unit.shape[1]
    q, k = part.unsqueeze(2), part.unsqueeze(1)  # (R, T, 1), (R, 1, T)
    same_unit = (unit.unsqueeze(2) == unit.unsqueeze(1)) & (unit.unsqueeze(2) > 0)
    visible = same_unit & ((k == 1) | (k == q))  # never the sibling response
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = (visible & causal) | (torch.eye(width, dtype=torch.bool) & (part == 0).unsqueeze(2))
    return mask.unsqueeze(1)


def _shared_batch(items: list[PairTokens], rows: list[list[int]], pad_id: int) -> SharedPairBatch:
    import torch

    B, R = len(items), len(rows)
    width = max(sum(pair_length(items[i]) for i in row) for row in rows)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    unit = torch.zeros((R, width), dtype=torch.long)  # 1 + slot of the pair in its row; 0 = pad
    part = torch.zeros((R, width), dtype=torch.long)  # 0 pad, 1 prompt, 2 chosen, 3 rejected
    g_index, g_labels, g_segment = [], [], []
    last = [0] * (2 * B)
    for r, row in enumerate(rows):
        s = 0
        for slot, i in enumerate(row):
            it = items[i]
            p, c, n = len(it.prompt_ids), len(it.chosen_ids), pair_length(it)
            ids[r, s:s + n] = torch.tensor(it.prompt_ids + it.chosen_ids + it.rejected_ids, dtype=torch.long)
            pos[r, s:s + p + c] = torch.arange(p + c)
            pos[r, s + p + c:s + n] = torch.arange(p, n - c)  # rejected continues from the prompt's end
            unit[r, s:s + n] = slot + 1
            part[r, s:s + p], part[r, s + p:s + p + c], part[r, s + p + c:s + n] = 1, 2, 3
            base = r * width + s
            # token t of prompt + chosen is predicted at t - 1; of prompt + rejected, rejected's first token
            # by the prompt's last token and the others by the rejected token before (which sits c further)
            ct = train_positions(p, it.prompt_mask, c, it.chosen_mask)
            rt = train_positions(p, it.prompt_mask, n - p - c, it.rejected_mask)
            g_index += [base + t - 1 for t in ct] + [base + t - 1 + (c if t > p else 0) for t in rt]
            g_labels += [(it.prompt_ids + it.chosen_ids)[t] for t in ct] + [(it.prompt_ids + it.rejected_ids)[t]
                                                                             for t in rt]
            g_segment += [i] * len(ct) + [B + i] * len(rt)
            last[i], last[B + i] = base + p + c - 1, base + n - 1
            s += n
    t = torch.tensor
    return SharedPairBatch(ids, pos, _block_mask(unit, part), part == 2, part == 3, t(g_index, dtype=torch.long),
                           t(g_labels, dtype=torch.long), t(g_segment, dtype=torch.long), t(last, dtype=torch.long),
                           B, int((part == 0).sum()), [it.index for it in items])


def collate_pairs_shared(items: list[PairTokens], pad_id: int) -> SharedPairBatch:
    """One row per pair: [prompt | chosen | rejected], the prompt computed once for both responses."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    return _shared_batch(items, [[i] for i in range(len(items))], pad_id)


def collate_pairs_packed(items: list[PairTokens], pad_id: int, max_tokens: int) -> SharedPairBatch:
    """Padding-free packing: several prefix-shared pairs per row, up to max_tokens per row
    (first-fit decreasing; a pair longer than max_tokens gets a row of its own). Pairs never see
    each other: the block mask is per pair and position ids restart at 0 for each pair.
    The mask is dense, so attention still costs T^2 per row: keep max_tokens near the longest
    pair (1-2x); packing pays when lengths vary widely, not as one huge row."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return _shared_batch(items, _pack_rows([pair_length(it) for it in items], max_tokens), pad_id)


def collate_sequences_packed(items: list[SequenceTokens], pad_id: int, max_tokens: int) -> SequenceBatch:
    """Padding-free packing of single sequences (SFT, KTO, scoring), up to max_tokens per row."""
    import torch

    if not items:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(it.prompt_ids) + len(it.completion_ids) for it in items]
    rows = _pack_rows(lengths, max_tokens)
    R, width = len(rows), max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    unit = torch.zeros((R, width), dtype=torch.long)
    part = torch.zeros((R, width), dtype=torch.long)
    g_index, g_labels, g_segment = [], [], []
    last = [0] * len(items)
    for r, row in enumerate(rows):
        s = 0
        for slot, i in enumerate(row):
            it, n = items[i], lengths[i]
            p = len(it.prompt_ids)
            assert p >= 1, "a sequence needs at least one prompt token to predict its first response token"
            ids[r, s:s + n] = torch.tensor(it.prompt_ids + it.completion_ids, dtype=torch.long)
            pos[r, s:s + n] = torch.arange(n)
            unit[r, s:s + n] = slot + 1
            part[r, s:s + p], part[r, s + p:s + n] = 1, 2
            base = r * width + s
            train = train_positions(p, it.prompt_mask, n - p, it.completion_mask)
            g_index += [base + t - 1 for t in train]
            g_labels += [(it.prompt_ids + it.completion_ids)[t] for t in train]
            g_segment += [i] * len(train)
            last[i] = base + n - 1
            s += n
    t = torch.tensor
    return SequenceBatch(ids, _block_mask(unit, part), pos, part == 2, None, t(g_index, dtype=torch.long),
                         t(g_labels, dtype=torch.long), t(g_segment, dtype=torch.long), t(last, dtype=torch.long),
                         len(items), int((part == 0).sum()), [it.index for it in items])


def collate_groups_shared(prompts: list[list[int]], completions: list[list[list[int]]], pad_id: int) -> SequenceBatch:
    """Prefix-shared groups (online RL): row p is [prompt p | completion p,1 | ... | completion p,G], the
    prompt computed once for its G completions. Each completion's positions continue from the prompt's
    end and its tokens see the prompt and themselves only (the block mask of the pair layout, with G
    responses). Sequences are numbered group after group (p * G + g when every group has G); a
    completion's first token is predicted by the prompt's last token. Returns a SequenceBatch with a
    4D mask, so every forward helper of SequenceBatch serves it unchanged."""
    import torch

    if not prompts or len(prompts) != len(completions):
        raise ValueError(f"need one list of completions per prompt, got {len(prompts)} prompts and "
                         f"{len(completions)} groups")
    R = len(prompts)
    widths = [len(p) + sum(len(c) for c in cs) for p, cs in zip(prompts, completions)]
    width = max(widths)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    unit = torch.zeros((R, width), dtype=torch.long)
    part = torch.zeros((R, width), dtype=torch.long)  # 0 pad, 1 prompt, 2 + g completion g
    g_index, g_labels, g_segment, last = [], [], [], []
    seq = 0
    for r, (prompt, group) in enumerate(zip(prompts, completions)):
        n_p = len(prompt)
        assert n_p >= 1, "a prompt needs at least one token to predict its completions' first token"
        ids[r, :n_p] = torch.tensor(prompt, dtype=torch.long)
        pos[r, :n_p] = torch.arange(n_p)
        unit[r, :widths[r]] = 1
        part[r, :n_p] = 1
        s = n_p
        for g, comp in enumerate(group):
            n = len(comp)
            ids[r, s:s + n] = torch.tensor(comp, dtype=torch.long)
            pos[r, s:s + n] = torch.arange(n_p, n_p + n)
            part[r, s:s + n] = 2 + g
            base = r * width
            if n:
                g_index += [base + n_p - 1] + list(range(base + s, base + s + n - 1))
            g_labels += comp
            g_segment += [seq] * n
            last.append(base + (s + n - 1 if n else n_p - 1))
            s += n
            seq += 1
    t = torch.tensor
    comp_mask = part >= 2
    return SequenceBatch(ids, _block_mask(unit, part), pos, comp_mask, None, t(g_index, dtype=torch.long),
                         t(g_labels, dtype=torch.long), t(g_segment, dtype=torch.long), t(last, dtype=torch.long),
                         seq, int((part == 0).sum()), list(range(seq)))
