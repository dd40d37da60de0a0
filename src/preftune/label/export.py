"""`label export`: every label as a preftune pair row, ready for `data check`, `data audit` and training.

A label becomes one row: `chosen` is the response the rater preferred (the input's first response for a
tie, with `close: true`), `annotator` the rater's name, `confidence` the strength of the choice, `attributes`
the per-dimension verdicts turned from shown sides (a / b) into chosen / rejected, `shown_first` which of
chosen and rejected was shown on the left, `gold` (honeypots only) the known answer in the same terms.
Rows of one item share `item` (and prompt and responses); `id` is `ITEM#RATER`, unique per file.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from preftune.label.store import Label, Pair, Principal

# Strength of the five-way choice -> confidence that chosen is better: linear from a tie (0.5, no
# preference) to "much better" (1.0). A convention, stated: raters give no probability.
CONFIDENCE = {"much_better": 1.0, "better": 0.75, "tie": 0.5}


def _preferred(choice: str, a_is_1: bool) -> int | None:
    """1 or 2 (the input's response the rater preferred), None for a tie."""
    if choice == "tie":
        return None
    shown_a = 1 if a_is_1 else 2
    return shown_a if choice.startswith("a_") else 3 - shown_a


def _side(side: str, a_is_1: bool, chosen: int) -> str:
    """A verdict on a shown side ("a", "b", "tie") as "chosen" / "rejected" / "tie"."""
    if side == "tie":
        return "tie"
    idx = (1 if a_is_1 else 2) if side == "a" else (2 if a_is_1 else 1)
    return "chosen" if idx == chosen else "rejected"


def label_row(label: Label, pair: Pair, rater: str) -> dict:
    pref = _preferred(label.choice, label.a_is_1)
    chosen = pref or 1
    strength = "tie" if pref is None else label.choice.split("_", 1)[1]
    resp = {1: pair.response_1, 2: pair.response_2}
    shown_a = 1 if label.a_is_1 else 2
    row = {"id": f"{pair.item}#{rater}", "prompt": pair.prompt, "chosen": resp[chosen], "rejected": resp[3 - chosen],
           "annotator": rater, "confidence": CONFIDENCE[strength], "close": pref is None}
    attrs = {dim: _side(v, label.a_is_1, chosen) for dim, v in sorted(label.attributes.items())}
    if attrs:
        row["attributes"] = attrs
    if label.rationale:
        row["rationale"] = label.rationale
    for k in ("category", "source"):
        if getattr(pair, k) is not None:
            row[k] = getattr(pair, k)
    row["item"] = pair.item
    row["choice"] = label.choice
    row["shown_first"] = "chosen" if shown_a == chosen else "rejected"
    if pair.gold is not None:
        row["gold"] = "tie" if pair.gold == "tie" else ("chosen" if int(pair.gold) == chosen else "rejected")
    row["label_seconds"] = round(label.seconds, 3)
    return row


def export_rows(s: Session) -> list[dict]:
    """Every label, in the order they were stored."""
    q = (select(Label, Pair, Principal.name).join(Pair, Pair.id == Label.pair_id)
         .join(Principal, Principal.id == Label.rater_id).order_by(Label.id))
    return [label_row(label, pair, name) for label, pair, name in s.execute(q)]
