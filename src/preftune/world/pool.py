"""A pool of simulated labellers for multi-labelled world data (`preftune data world --labels-per-pair K
--labellers clean:4,noisy:2,length:1,position:1`).

Each training pair is labelled by K distinct labellers drawn uniformly from the pool; each label is one row
with its own `annotator`, its own `shown_first` (the order that labeller saw, drawn per label) and the truth
(`gold_chosen_is_better`, plus `world_item`, the pair's index). A share of the items can carry a `gold`
verdict (honeypots). The labellers' kinds and rates are those of `generate.AnnotatorKind`.
"""

from __future__ import annotations

import random

from preftune.world.generate import Annotator, AnnotatorKind, _pair_record

# rate of each kind when the spec gives none: noisy flips 30% of its labels; length- and position-biased
# labellers follow their bias on 80% of the labels where it matters
DEFAULT_RATES = {AnnotatorKind.CLEAN: 0.0, AnnotatorKind.NOISY: 0.3, AnnotatorKind.LENGTH: 0.8,
                 AnnotatorKind.POSITION: 0.8}
DEFAULT_POOL = "clean:4,noisy:2,length:1,position:1"


def parse_labellers(spec: str) -> list[Annotator]:
    """`kind:count[@rate],...` -> labellers named `kind-1`, `kind-2`, ... (e.g. `noisy:2@0.4`)."""
    kinds = ", ".join(k.value for k in AnnotatorKind)
    out: list[Annotator] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        head, _, rate_s = part.partition("@")
        kind_s, _, count_s = head.partition(":")
        try:
            kind = AnnotatorKind(kind_s.strip())
            count = int(count_s) if count_s else 1
            rate = float(rate_s) if rate_s else DEFAULT_RATES[kind]
        except ValueError:
            raise ValueError(f"--labellers: {part!r} must be kind:count[@rate] with kind one of {kinds}") from None
        if count < 1 or not 0.0 <= rate <= 1.0:
            raise ValueError(f"--labellers: {part!r}: count must be >= 1 and rate in [0, 1]")
        start = sum(a.kind is kind for a in out)
        out += [Annotator(f"{kind.value}-{start + j + 1}", kind, rate, 1.0) for j in range(count)]
    if not out:
        raise ValueError(f"--labellers: {spec!r} names no labeller (e.g. {DEFAULT_POOL})")
    return out


def label_multi(rng: random.Random, items: list[tuple], pool: list[Annotator], k: int, seed: int,
                honeypot_share: float = 0.0) -> tuple[list, dict]:
    """K labels per item from distinct labellers of the pool: (rows, changed count per labeller)."""
    if not 1 <= k <= len(pool):
        raise ValueError(f"--labels-per-pair must be between 1 and the pool's size ({len(pool)}), got {k}")
    if not 0.0 <= honeypot_share <= 1.0:
        raise ValueError(f"--honeypots must be a share in [0, 1], got {honeypot_share}")
    records, changed = [], {a.name: 0 for a in pool}
    for i, (task, cand) in enumerate(items):
        honeypot = rng.random() < honeypot_share
        for j, ann in enumerate(rng.sample(pool, k)):
            better_first = rng.random() < 0.5
            ok = ann.kind.picks_better(ann.rate, rng, len(cand[2]) > len(cand[1]), better_first)
            changed[ann.name] += not ok
            shown = "chosen" if better_first == ok else "rejected"
            rec = _pair_record(f"world-train-{seed}-{i}-{j}", task, cand, ann, ok, shown)
            rec.extra["world_item"] = i
            if honeypot:
                rec.extra["gold"] = "chosen" if ok else "rejected"
            records.append(rec)
    return records, changed
