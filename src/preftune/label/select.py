"""Which free pair is served next (`label serve --select`):

    order         the most advanced pair first (complete items early), then input order (the default)
    disagreement  pairs the raters so far split on first (labels naming different responses, or a tie and a
                  preference), then as `order`: their remaining slots resolve the split soonest
    uncertainty   pairs a reward model (or ensemble, `--rm RUN`) is least sure of first: the predictive entropy
                  H(p) of p = mean over members of sigmoid(r_1 - r_2), scored once when the server starts and
                  kept in `pairs.priority` (active preference learning: the most informative comparisons first)

The entropy is the "max entropy" acquisition of active learning (Houlsby et al. 2011, arXiv 1112.5745,
eq. 1 without the expected-entropy term); with an ensemble it counts the members' disagreement through p.
"""

from __future__ import annotations

import enum
import math

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from preftune.label.store import Label, Pair


class Select(enum.Enum):
    ORDER = "order"
    DISAGREEMENT = "disagreement"
    UNCERTAINTY = "uncertainty"

    @classmethod
    def parse(cls, name: str) -> Select:
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"--select {name!r}: use one of {', '.join(s.value for s in cls)}") from None


def _split_pairs():
    """pair_id -> 1 when its labels name different verdicts (1, 2, tie), as a subquery."""
    verdict = case((Label.choice == "tie", "tie"), (Label.choice.like("a\\_%", escape="\\") == Label.a_is_1, "1"),
                   else_="2")
    return (select(Label.pair_id, (func.count(func.distinct(verdict)) > 1).label("split"))
            .group_by(Label.pair_id).subquery())


def order_free_pairs(q, mode: Select, taken_n):
    """The ORDER BY of the free-pair query for a mode; `taken_n` is its slots-taken column."""
    if mode is Select.DISAGREEMENT:
        split = _split_pairs()
        q = q.outerjoin(split, split.c.pair_id == Pair.id)
        return q.order_by(func.coalesce(split.c.split, False).desc(), taken_n.desc(), Pair.id)
    if mode is Select.UNCERTAINTY:
        return q.order_by(func.coalesce(Pair.priority, -1.0).desc(), taken_n.desc(), Pair.id)
    return q.order_by(taken_n.desc(), Pair.id)


def preference_entropy(margins: list[float]) -> float:
    """H(p) in nats, p = mean_k sigmoid(margin_k) over ensemble members (one margin for a single model)."""
    p = sum(1.0 / (1.0 + math.exp(-m)) for m in margins) / len(margins)
    p = min(max(p, 1e-12), 1 - 1e-12)
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def score_uncertainty(s: Session, rm: str, batch_size: int = 16) -> int:
    """Score every regular pair with the reward model `rm` (run folder, ensemble, or model) and store its
    preference entropy as `priority`. Returns the number of pairs scored."""
    from tqdm.auto import tqdm

    from preftune.data.records import render_text
    from preftune.models.scoring import load_scorer

    scorer = load_scorer(rm)
    pairs = list(s.scalars(select(Pair).where(Pair.gold.is_(None)).order_by(Pair.id)))
    for i in tqdm(range(0, len(pairs), batch_size), desc="scoring pairs", unit="batch"):
        chunk = pairs[i:i + batch_size]
        prompts = [render_text(p.prompt) for p in chunk]
        r1 = scorer.score(prompts, [render_text(p.response_1) for p in chunk])["members"]  # (M, B)
        r2 = scorer.score(prompts, [render_text(p.response_2) for p in chunk])["members"]  # (M, B)
        for j, pair in enumerate(chunk):
            pair.priority = preference_entropy([float(a - b) for a, b in zip(r1[:, j], r2[:, j])])
    return len(pairs)
