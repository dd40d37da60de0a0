"""What the DPO family logs per batch (sums reduced to means over the step's global batch) and the
one training-dynamics warning DPO users need: the chosen log-prob falling while the margin grows."""

from __future__ import annotations

import torch

from preftune.ops.logprobs import pad_by_segment
from preftune.ops.stats import kl_k3
from preftune.train.plan import MetricSums


def add_kl(sums: MetricSums, pol_tokens: torch.Tensor, pol_mask: torch.Tensor, ref_tokens: torch.Tensor | None,
           ref_mask: torch.Tensor | None) -> None:
    """k3 KL(policy || reference) per chosen token (Schulman 2020), summed for a token mean.
    tokens (B, L) per-token log-probs, masks (B, L) bool; no reference: nothing is logged."""
    if ref_tokens is None:
        return
    # widths may differ (a (B, L) matrix is as wide as its longest side); row-major selection lines up
    assert torch.equal(ref_mask.sum(1), pol_mask.sum(1)), "reference and policy saw different chosen tokens"
    sums.add("kl", kl_k3(pol_tokens.detach()[pol_mask], ref_tokens[ref_mask]).sum(), pol_mask.sum())


def pair_metrics(sums: MetricSums, out, pol, ref) -> None:
    """Add one batch's per-pair sums: loss, implicit rewards, log-probs, lengths, KL.
    out: PreferenceLossOutput; pol: models.forward.PairLogps; ref: refcache.RefPairLogps or None."""
    B = pol.chosen_logps.shape[0]
    margin = out.chosen_rewards - out.rejected_rewards
    for name, v in (("loss", out.losses.detach()), ("rewards/chosen", out.chosen_rewards),
                    ("rewards/rejected", out.rejected_rewards), ("rewards/margin", margin),
                    ("rewards/accuracy", (margin > 0).float()), ("logps/chosen", pol.chosen_logps.detach()),
                    ("logps/rejected", pol.rejected_logps.detach()), ("lengths/chosen", pol.num_chosen_tokens.float()),
                    ("lengths/rejected", pol.num_rejected_tokens.float())):
        sums.add(name, v.sum(), B)
    tok, mask = pol.token_matrix("chosen")
    add_kl(sums, tok, mask, *((ref.chosen_tokens, ref.chosen_mask) if ref is not None else (None, None)))


def kto_metrics(sums: MetricSums, losses, rewards, pol, ref, labels, z0) -> None:
    """KTO rows: losses, rewards (B,), pol SequenceLogps, ref RefSequenceLogps, labels (B,) bool."""
    d, u = labels, ~labels
    sums.add("loss", losses.detach().sum(), labels.numel())
    for side, m in (("chosen", d), ("rejected", u)):
        sums.add(f"rewards/{side}", rewards[m].sum(), m.sum())
        sums.add(f"logps/{side}", pol.logps.detach()[m].sum(), m.sum())
        sums.add(f"lengths/{side}", pol.num_tokens[m].float().sum(), m.sum())
    sums.add("kto/z0", torch.as_tensor(z0).float(), 1)
    tok, mask = pad_by_segment(pol.token_logps, pol.token_segment, labels.numel())
    add_kl(sums, tok[d], mask[d], ref.tokens[d], ref.mask[d])


def finish_metrics(m: dict, prefix: str) -> dict:
    """KTO's margin is the difference of the two sides' means (no row has both)."""
    c, r = m.get(f"{prefix}/rewards/chosen"), m.get(f"{prefix}/rewards/rejected")
    if c is not None and r is not None and f"{prefix}/rewards/margin" not in m:
        m[f"{prefix}/rewards/margin"] = c - r
    return m


CHOSEN_FALLING = ("the chosen log-prob is falling while the margin grows: both responses are being pushed "
                  "down (rejected faster); consider a smaller lr, a larger beta, or an sft term "
                  "(loss=sigmoid:1,sft:0.1)")


def chosen_falls_while_margin_grows(rows: list[dict], window: int = 5) -> bool:
    """The classic DPO failure sign: over the logged steps, the chosen log-prob went down while the
    margin went up (both sides pushed down, rejected faster). Compares the first and last `window` rows."""
    rows = [r for r in rows if "train/logps/chosen" in r and "train/rewards/margin" in r]
    if len(rows) < 2 * window:
        return False

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = rows[:window], rows[-window:]
    return (mean("train/logps/chosen", last) < mean("train/logps/chosen", first)
            and mean("train/rewards/margin", last) > mean("train/rewards/margin", first))
