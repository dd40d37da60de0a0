"""Reward-model data: pair files -> tokenised pairs with per-pair labels -> the micro-batch schedule
(length-grouped, every epoch reshuffled) -> collated RMBatch pieces under a token budget.

P pairs, A attribute heads, E ensemble heads. Labels are indexed by a pair's position in `items`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from preftune.batching import (
    PairBatch,
    SharedPairBatch,
    _pack_rows,
    collate_pairs_packed,
    collate_pairs_padded,
    collate_pairs_shared,
    pair_length,
)
from preftune.tokenize import PairTokens, TokenizeReport, tokenize_pairs
from preftune.train.configs import RMConfig

VERDICT_CODES = {"chosen": 1, "rejected": -1, "tie": 0}  # = losses.pairwise.VERDICT_*
MISSING = -100


@dataclass
class PairData:
    """Tokenised pairs and their per-pair labels (P pairs, A attribute heads, E ensemble heads)."""
    items: list[PairTokens]  # item.index = position in `items` (relabelled by prepare_pairs)
    records: list          # list[PairRecord] in input order
    margin: torch.Tensor       # (P,) float, row margin (0 when absent)
    confidence: torch.Tensor   # (P,) float, row confidence (1 when absent)
    is_tie: torch.Tensor       # (P,) bool, close: true
    verdicts: torch.Tensor     # (P, A) long, VERDICT_* codes, MISSING where the row is silent
    report: TokenizeReport


def resolve_heads(heads: list[str], records: list) -> list[str]:
    """The attribute head names: as given, or every attribute present when heads == ['auto'].
    A named head that no row gives a verdict for is an error (it would be saved untrained)."""
    present = {k for r in records for k, v in (r.attributes or {}).items() if v is not None}
    if list(heads) == ["auto"]:
        return sorted(present)
    missing = [h for h in heads if h not in present]
    if missing:
        known = ", ".join(sorted(present)) or "none"
        raise ValueError(f"heads: no row has a verdict for {', '.join(missing)} (attributes in the data: {known})")
    return list(heads)


def prepare_pairs(records: list, tokenizer, cfg: RMConfig, heads: list[str], encoder: bool) -> PairData:
    items, report = tokenize_pairs(records, tokenizer, cfg.max_length, cfg.max_prompt_length,
                                   cfg.on_overlong, encoder=encoder)
    recs = [records[it.index] for it in items]
    for k, it in enumerate(items):  # labels below are indexed by position in `items`
        it.index = k
    margin = torch.tensor([float(r.margin or 0.0) for r in recs])
    conf = torch.tensor([1.0 if r.confidence is None else float(r.confidence) for r in recs])
    ties = torch.tensor([bool(r.close) for r in recs], dtype=torch.bool)
    verdicts = torch.full((len(recs), len(heads)), MISSING, dtype=torch.long)
    for i, r in enumerate(recs):
        for j, h in enumerate(heads):
            v = (r.attributes or {}).get(h)
            if v is not None:
                verdicts[i, j] = VERDICT_CODES[v]
    return PairData(items, recs, margin, conf, ties, verdicts, report)


def bootstrap_weights(num_pairs: int, num_heads: int, seed: int, enabled: bool):
    """(P, E) Poisson(1) counts: head e trains on its own resample of the pairs (ones when off / E = 1)."""
    if not enabled or num_heads == 1:
        return torch.ones(num_pairs, num_heads)
    g = torch.Generator().manual_seed(10_007 * seed + 17)
    return torch.poisson(torch.ones(num_pairs, num_heads), generator=g)


@dataclass
class RMBatch:
    """One micro-batch: the model batch plus per-pair labels (B pairs, A attributes, E ensemble heads)."""
    batch: PairBatch | SharedPairBatch
    margin: torch.Tensor      # (B,)
    confidence: torch.Tensor  # (B,)
    is_tie: torch.Tensor      # (B,) bool
    verdicts: torch.Tensor    # (B, A)
    weights: torch.Tensor     # (B, E) bootstrap counts of the ensemble heads


def make_collate(data: PairData, weights, layout: str, pad_id: int, encoder: bool, max_tokens: int = 0):
    """collate(items) -> list of RMBatch pieces: the micro-batch's pairs split so that each piece
    costs <= max_tokens (first-fit decreasing; a longer pair is a piece alone; 0 = one piece)."""
    def one(items: list) -> RMBatch:
        idx = [it.index for it in items]
        if layout == "packed":
            # rows as long as the batch's longest pair: packing never lengthens the widest row
            b = collate_pairs_packed(items, pad_id, max(pair_length(it) for it in items))
        elif layout == "shared":
            b = collate_pairs_shared(items, pad_id)
        else:
            b = collate_pairs_padded(items, pad_id, "right", encoder)
        return RMBatch(b, data.margin[idx], data.confidence[idx], data.is_tie[idx], data.verdicts[idx], weights[idx])

    cost_layout = "unpadded" if encoder else layout  # encoders run each sequence without padding

    def collate(items: list) -> list[RMBatch]:
        costs = [pair_length(it, cost_layout) for it in items]
        if not max_tokens or sum(costs) <= max_tokens:
            return [one(items)]
        pieces = _pack_rows(costs, max_tokens)
        return [one([items[i] for i in sorted(piece)]) for piece in pieces]
    return collate


def counted_per_batch(data: PairData, schedule: list[list[int]], ties: str) -> list[tuple[int, int]]:
    """(overall pairs counted, attribute entries counted) per micro-batch: known before any forward."""
    out = []
    for b in schedule:
        tie, v = data.is_tie[b], data.verdicts[b]
        n_overall = int((~tie).sum()) if ties == "skip" else len(b)
        present = v != MISSING
        # attribute heads take ties as half wins only with ties=half (multi_head_loss has no Rao-Kupper)
        n_attr = int(present.sum()) if ties == "half" else int((present & (v != 0)).sum())
        out.append((n_overall, n_attr))
    return out
