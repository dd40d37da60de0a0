"""Acting on an audit report (`preftune data curate --audit AUDIT.json ...`), before the usual checks.

- `--drop-suspected Q` / `--flip-suspected Q`: the rows the audit suspects most (by each row's `suspicion`)
  are removed, or have chosen and rejected swapped. Q is a share of the scored rows (`0.1`, `share:0.1`,
  `10%`) or a score threshold (`score:0.9`: suspicion >= 0.9).
- `--aggregate majority|dawid-skene`: each multi-labelled item becomes one pair (its first row, oriented
  to the aggregate verdict) with `confidence` = the winning share (majority) or the posterior (Dawid-Skene);
  the item's other rows are removed as `aggregated`. An item without a majority is removed whole.
One action per run: the audit's scores and verdicts describe the file before any of them.

A flip also flips what depends on the orientation: `shown_first`, `gold`, `attributes` verdicts, and the
world's `gold_chosen_is_better`. Every removed row is a `Removal` and every changed row a line of `changed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from preftune.data.curate import Reason, Removal
from preftune.data.records import Record, parse_row

AGGREGATES = ("majority", "dawid-skene")
_OTHER = {"chosen": "rejected", "rejected": "chosen", "tie": "tie"}


@dataclass(frozen=True)
class Selection:
    """Which suspected rows to act on: the top `share` of scored rows, or those with suspicion >= `score`."""
    share: float | None = None
    score: float | None = None


def parse_selection(text: str, flag: str) -> Selection:
    t = text.strip()
    try:
        if t.startswith("score:"):
            v = float(t[6:])
            if not 0.0 <= v <= 1.0:
                raise ValueError
            return Selection(score=v)
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t.removeprefix("share:"))
    except ValueError:
        raise ValueError(f"{flag}: {text!r} must be a share (0.1, share:0.1, 10%) or a threshold (score:0.9)") from None
    if not 0.0 < v < 1.0:
        raise ValueError(f"{flag}: the share must be in (0, 1), got {text!r}")
    return Selection(share=v)


@dataclass
class AuditActions:
    rows: list[dict]
    records: list[Record]
    lines: list[int]
    removed: list[Removal] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)


def _audit_rows(audit: dict, by_line: dict[int, int], records: Sequence[Record], path: str) -> list[dict]:
    """Every row entry of the audit's items, checked against the file being curated."""
    items = audit.get("items")
    if not isinstance(items, list):
        hint = "write one with `preftune data audit FILE --json AUDIT.json`"
        raise ValueError(f"{path}: not an audit report (no `items` list); {hint}")  # noqa: TRY004 (user input)
    out = []
    for it in items:
        for row in it.get("rows", []):
            i = by_line.get(row.get("line"))
            if i is None or records[i].id != row.get("id"):
                raise ValueError(f"{path}: its row at line {row.get('line')} (id {row.get('id')!r}) is not the "
                                 "row at that line of the input; audit this very file")
            out.append({**row, "item": it})
    return out


def _select(scored: list[dict], sel: Selection) -> list[dict]:
    ranked = sorted(scored, key=lambda r: -r["suspicion"])
    if sel.score is not None:
        return [r for r in ranked if r["suspicion"] >= sel.score]
    return ranked[: round(sel.share * len(ranked))]


def flip_row(row: dict) -> dict:
    """chosen <-> rejected, and every key that names one of them."""
    out = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
    for key in ("shown_first", "gold"):
        if out.get(key) in _OTHER:
            out[key] = _OTHER[out[key]]
    if isinstance(out.get("attributes"), dict):
        out["attributes"] = {k: _OTHER.get(v, v) for k, v in out["attributes"].items()}
    if isinstance(out.get("gold_chosen_is_better"), bool):
        out["gold_chosen_is_better"] = not out["gold_chosen_is_better"]
    return out


def apply_audit(rows: list[dict], records: list[Record], lines: list[int], audit: dict, path: str, *,
                drop: Selection | None = None, flip: Selection | None = None,
                aggregate: str | None = None) -> AuditActions:
    """The rows after the audit's actions, with a Removal per removed row and a `changed` line per changed one."""
    if sum(x is not None and x is not False for x in (drop, flip, aggregate)) > 1:
        raise ValueError("give one of --drop-suspected, --flip-suspected and --aggregate (the audit's scores and "
                         "verdicts describe the file before any of them)")
    if aggregate is not None and aggregate not in AGGREGATES:
        raise ValueError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    by_line = {ln: i for i, ln in enumerate(lines)}
    entries = _audit_rows(audit, by_line, records, path)
    new_rows = list(rows)
    gone: dict[int, Removal] = {}
    changed: list[dict] = []
    sel = drop or flip
    if sel is not None:
        scored = [e for e in entries if e.get("suspicion") is not None]
        if not scored:
            raise ValueError(f"{path}: no row has a suspicion score; audit with --folds K (or multi-labelled rows)")
        for e in _select(scored, sel):
            i = by_line[e["line"]]
            detail = f"suspicion {e['suspicion']:.3f} ({e['item'].get('suspicion_source')})"
            if drop:
                gone[i] = Removal(e["line"], e["id"], Reason.SUSPECTED_MISLABEL, detail)
            else:
                new_rows[i] = flip_row(new_rows[i])
                changed.append({"line": e["line"], "id": e["id"], "action": "flipped", "detail": detail})
    if aggregate:
        _aggregate(audit, by_line, new_rows, records, gone, changed, aggregate)
    keep = [i for i in range(len(rows)) if i not in gone]
    recs = []
    for i in keep:
        rec, problems = parse_row(new_rows[i])
        assert rec is not None and not problems, problems  # a flip or aggregate keeps a valid row valid
        recs.append(rec)
    return AuditActions([new_rows[i] for i in keep], recs, [lines[i] for i in keep],
                        sorted(gone.values(), key=lambda r: r.line), changed)


def _aggregate(audit: dict, by_line: dict[int, int], rows: list[dict], records: list[Record],
               gone: dict[int, Removal], changed: list[dict], how: str) -> None:
    for it in audit["items"]:
        if len(it["rows"]) < 2:
            continue
        if how == "dawid-skene":
            post = it.get("ds_posterior")
            if not post:
                raise ValueError("--aggregate dawid-skene: the audit has no Dawid-Skene posteriors (it needs 2+ "
                                 "annotators and 20+ multi-labelled items)")
            verdict = max(post, key=lambda v: post[v])
            conf = post[verdict]
        else:
            verdict = it.get("majority")
            counts = it["verdicts"]
            conf = counts[verdict] / sum(counts.values()) if verdict else None
        lines = ", ".join(str(r["line"]) for r in it["rows"])
        if verdict is None:
            for r in it["rows"]:
                gone[by_line[r["line"]]] = Removal(r["line"], r["id"], Reason.AGGREGATE_NO_MAJORITY,
                                                   f"labels {it['verdicts']} (lines {lines}): no majority, "
                                                   "every label removed")
            continue
        # verdicts are relative to the item's first row, which is the row kept
        i0 = by_line[it["rows"][0]["line"]]
        out = flip_row(rows[i0]) if verdict == "rejected" else dict(rows[i0])
        out["confidence"] = round(float(conf), 6)
        out["close"] = verdict == "tie"
        out.pop("annotator", None)
        out["aggregated_from"] = [r["line"] for r in it["rows"]]
        rows[i0] = out
        changed.append({"line": it["rows"][0]["line"], "id": records[i0].id, "action": f"aggregated ({how})",
                        "detail": f"verdict {verdict} with confidence {conf:.3f} from lines {lines}"})
        for r in it["rows"][1:]:
            gone[by_line[r["line"]]] = Removal(r["line"], r["id"], Reason.AGGREGATED,
                                               f"one label of the item kept at line {it['rows'][0]['line']}",
                                               it["rows"][0]["line"])
