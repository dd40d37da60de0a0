"""`preftune data audit`: the report on a comparison file's labels (no models: see preftune.audit for the
cross-fitted mislabel scores that can be merged into it).

Rows with the same prompt and the same two responses (either order; `curate.pair_key`) are labels of one
item. Each row's label is coded against the item's fixed order (`agreement.A`/`B`, `TIE` for `close: true`
when `ties="close"`), so rows that call different responses `chosen` are compared correctly.

Report keys (stable): `input`, `num_rows`, `num_items`, `num_multi_labelled_items`, `ties`, `skipped` (list of
{part, reason}), `notes`, `agreement` ({raw, fleiss_kappa, fleiss, krippendorff_alpha, num_items, num_labels,
cohen} or null), `length_reference`, `annotators` (see `agreement.annotator_stats`), `dawid_skene`
({priors, num_iterations} or null), `items` (one per item: id, lines, num_labels, verdicts, majority,
ds_posterior, ds_p_chosen, oof_p_chosen, suspicion, suspicion_source, rows). Verdicts of an item are given
relative to its first row: "chosen" means that row's chosen response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from preftune.data.agreement import (
    TIE,
    Label,
    Thresholds,
    annotator_stats,
    count_table,
    dawid_skene,
    fleiss_kappa,
    item_values,
    krippendorff_alpha,
    longer_reference,
    majority,
    pairwise_cohen,
    raw_agreement,
)
from preftune.data.curate import pair_key
from preftune.data.records import PairRecord, Record, parse_row, render_text

TIES = ("close", "none")
LABELLING_KEYS = ("gold", "shown_first")
MIN_DS_ITEMS = 20  # multi-labelled items below which Dawid-Skene's labeller estimates are not worth reporting


@dataclass
class Items:
    """The items of a file and the labels on them. `first[i]` is the row whose chosen/rejected name the
    item's verdicts; `rows[i]` every row of item i (input positions); `a_is_chosen[r]` says whether row r's
    chosen is the item's response A."""
    labels: list[Label]
    first: list[int]
    rows: list[list[int]]
    a_is_chosen: dict[int, bool]
    notes: list[str] = field(default_factory=list)


def load_audit_rows(path: str):
    """(records, lines, invalid, notes). A row whose only problems are a bad `gold` or `shown_first` is
    kept without that key (named in `notes`: the rest of the report does not need it); any other invalid
    row is in `invalid` as (line, message)."""
    from preftune.data.io import iter_raw

    records, lines, invalid, notes = [], [], [], []
    for raw in iter_raw(path):
        if raw.error is not None:
            invalid.append((raw.line, raw.error))
            continue
        rec, problems = parse_row(raw.row)
        if problems and all(p.field in LABELLING_KEYS for p in problems):
            notes.extend(f"{path}:{raw.line}: {p}; the key is ignored for this row" for p in problems)
            rec, problems = parse_row({k: v for k, v in raw.row.items()
                                       if k not in {p.field for p in problems}})
        if problems:
            invalid.append((raw.line, "; ".join(str(p) for p in problems)))
        else:
            records.append(rec)
            lines.append(raw.line)
    return records, lines, invalid, notes


def _code(chosen_wins: bool, a_is_chosen: bool) -> int:
    return 0 if chosen_wins == a_is_chosen else 1


def _gold_code(verdict: str, a_is_chosen: bool) -> int:
    return TIE if verdict == "tie" else _code(verdict == "chosen", a_is_chosen)


def build_items(records: Sequence[Record], ties: str = "close",
                gold: Sequence[PairRecord] = ()) -> Items:
    """Group the pair records into items and code every row's label. `gold`: pair rows of known answers
    (the row's `gold` verdict, else its chosen wins), matched to items by prompt and responses."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    index: dict = {}
    first: list[int] = []
    rows: list[list[int]] = []
    a_is_chosen: dict[int, bool] = {}
    labels: list[Label] = []
    notes: list[str] = []
    gold_by_key = {}
    for g in gold:
        key, orient = pair_key(g)
        gold_by_key[key] = _gold_code(str(g.extra.get("gold", "chosen")), orient)
    num_other = 0
    for r, rec in enumerate(records):
        if not isinstance(rec, PairRecord):
            num_other += 1
            continue
        key, orient = pair_key(rec)  # orient: chosen is the item's response A
        item = index.setdefault(key, len(first))
        if item == len(first):
            first.append(r)
            rows.append([])
        rows[item].append(r)
        a_is_chosen[r] = orient
        tie = ties == "close" and rec.close is True
        value = TIE if tie else _code(True, orient)
        lc, lr = len(render_text(rec.chosen)), len(render_text(rec.rejected))
        shown = rec.extra.get("shown_first")
        g = rec.extra.get("gold")
        labels.append(Label(row=r, item=item, annotator=rec.annotator, value=value,
                            longer_wins=None if tie or lc == lr else lc > lr,
                            first_shown_wins=None if tie or shown is None else shown == "chosen",
                            gold=_gold_code(g, orient) if g is not None else gold_by_key.get(key)))
    if num_other:
        notes.append(f"{num_other} unpaired/rated row(s) are not comparisons; they are left out of the audit")
    if gold:
        matched = sum(k in index for k in gold_by_key)
        notes.append(f"--gold: {matched} of {len(gold_by_key)} gold item(s) match an item of the file")
    return Items(labels, first, rows, a_is_chosen, notes)


def _skips(items: Items) -> tuple[list[dict], bool, bool]:
    """(skipped parts with a one-line reason, run agreement?, run Dawid-Skene?)."""
    names = {lab.annotator for lab in items.labels if lab.annotator is not None}
    multi = sum(len(r) >= 2 for r in items.rows)
    skipped = []
    if not items.labels:
        skipped.append({"part": "everything", "reason": "no pair rows: nothing to audit"})
        return skipped, False, False
    if not names:
        skipped.append({"part": "agreement, annotators, dawid_skene",
                        "reason": "no `annotator` column: agreement and labeller statistics skipped "
                                  "(mislabel scores still run with --folds)"})
        return skipped, False, False
    if multi == 0:
        skipped.append({"part": "agreement, dawid_skene",
                        "reason": "every item has one label (no two rows share a prompt and both responses)"})
    elif multi < MIN_DS_ITEMS:
        skipped.append({"part": "dawid_skene", "reason": f"only {multi} item(s) have 2+ labels; Dawid-Skene needs "
                                                         f"at least {MIN_DS_ITEMS} to estimate labellers"})
    if len(names) == 1:
        skipped.append({"part": "agreement, dawid_skene",
                        "reason": f"a single annotator ({next(iter(names))}): agreement needs two"})
    unnamed = sum(lab.annotator is None for lab in items.labels)
    if unnamed:
        skipped.append({"part": "annotators (partly)",
                        "reason": f"{unnamed} row(s) have no `annotator`: counted in agreement, not per labeller"})
    ok = multi > 0 and len(names) >= 2
    return skipped, ok, ok and multi >= MIN_DS_ITEMS


def audit_report(records: Sequence[Record], lines: Sequence[int], *, ties: str = "close",
                 gold: Sequence[PairRecord] = (), thresholds: Thresholds | None = None,
                 notes: Sequence[str] = ()) -> dict:
    """The report dict (module docstring) on parsed records with their lines."""
    thresholds = thresholds or Thresholds()
    items = build_items(records, ties, gold)
    skipped, run_agreement, run_ds = _skips(items)
    num_items = len(items.first)
    table = count_table(item_values(items.labels, num_items))
    agreement = None
    if run_agreement:
        f = fleiss_kappa(table)
        agreement = {"raw": raw_agreement(table), "fleiss_kappa": f["value"], "fleiss": f,
                     "krippendorff_alpha": krippendorff_alpha(table),
                     "num_items": int((table.sum(1) >= 2).sum()), "num_labels": int(table[table.sum(1) >= 2].sum()),
                     "cohen": pairwise_cohen(items.labels)}
    ds = dawid_skene(items.labels) if run_ds else None
    named = any(lab.annotator is not None for lab in items.labels)
    annotators = annotator_stats(items.labels, num_items, ds, thresholds) if named else []
    return {
        "num_rows": len(records), "num_items": num_items,
        "num_multi_labelled_items": sum(len(r) >= 2 for r in items.rows), "ties": ties,
        "skipped": skipped, "notes": [*notes, *items.notes], "agreement": agreement,
        "length_reference": longer_reference(items.labels, thresholds.min_labels),
        "thresholds": asdict(thresholds),
        "annotators": annotators,
        "dawid_skene": {"priors": ds.priors, "num_iterations": ds.num_iterations} if ds else None,
        "items": _item_rows(records, lines, items, ds),
    }


_VERDICT = {True: "chosen", False: "rejected"}


def _verdict(code: int, a_is_chosen: bool) -> str:
    """An item code as a verdict on the item's first row."""
    return "tie" if code == TIE else _VERDICT[(code == 0) == a_is_chosen]


def _item_rows(records: Sequence[Record], lines: Sequence[int], items: Items, ds) -> list[dict]:
    by_item = item_values(items.labels, len(items.first))
    label_of = {lab.row: lab for lab in items.labels}
    out = []
    for i, r0 in enumerate(items.first):
        a0 = items.a_is_chosen[r0]
        post = ds.posterior.get(i) if ds else None
        ds_post = ({_verdict(c, a0): post[c] for c in range(3)} if post is not None else None)
        maj = majority(by_item[i])
        rows = []
        for r in items.rows[i]:
            lab = label_of[r]
            # a row's suspicion from the Dawid-Skene posterior: P(its label is wrong)
            s = None if post is None else 1.0 - post[lab.value]
            rows.append({"line": lines[r], "id": records[r].id, "annotator": lab.annotator,
                         "verdict": _verdict(lab.value, a0), "suspicion": s})
        sus = [x["suspicion"] for x in rows if x["suspicion"] is not None]
        out.append({"id": records[r0].id if records[r0].id is not None else f"line-{lines[r0]}",
                    "lines": [lines[r] for r in items.rows[i]], "num_labels": len(items.rows[i]),
                    "verdicts": {v: sum(_verdict(c, a0) == v for c in by_item[i])
                                 for v in ("chosen", "rejected", "tie")},
                    "majority": None if maj is None else _verdict(maj, a0),
                    "ds_posterior": ds_post, "ds_p_chosen": None if ds_post is None else ds_post["chosen"],
                    "oof_p_chosen": None, "suspicion": max(sus) if sus else None,
                    "suspicion_source": "dawid_skene" if sus else None, "rows": rows})
    return out


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_summary(report: dict, top: int = 10) -> str:
    """The printed summary: skipped parts, agreement, the annotator table, the most suspicious items."""
    out = [(f"{report.get('input', '')}: {report['num_rows']} rows, {report['num_items']} items, "
            f"{report['num_multi_labelled_items']} with 2+ labels (ties: {report['ties']})")]
    out += [f"skipped {s['part']}: {s['reason']}" for s in report["skipped"]]
    out += [f"note: {n}" for n in report["notes"][:10]]
    if len(report["notes"]) > 10:
        out.append(f"note: ... and {len(report['notes']) - 10} more (see the JSON report)")
    ref = report.get("length_reference") or {}
    if ref.get("overall") is not None:
        out.append(f"'longer wins' in {ref['overall']:.1%} of the labels where lengths differ (median labeller "
                   f"{_fmt(ref['median_labeller'], '.1%')}); a labeller's length bias is against the median labeller")
    ag = report["agreement"]
    if ag:
        out.append(f"agreement on {ag['num_items']} items ({ag['num_labels']} labels): raw {_fmt(ag['raw'])}, "
                   f"Fleiss' kappa {_fmt(ag['fleiss_kappa'])} ({ag['fleiss']['num_items']} items with "
                   f"{ag['fleiss']['num_raters']} labels), Krippendorff's alpha {_fmt(ag['krippendorff_alpha'])}")
    if report["annotators"]:
        head = (f"{'annotator':<22}{'labels':>7}{'maj.agr':>8}{'DS acc':>8}{'len.bias':>9}{'pos.bias':>9}"
                f"{'honeypot':>9}  flags")
        out += ["", head]
        for a in report["annotators"]:
            flags = ", ".join(f"{f['flag']} ({f['statistic']} {f['value']:+.3f})" for f in a["flags"]) or "-"
            out.append(f"{str(a['annotator'])[:21]:<22}{a['num_labels']:>7}{_fmt(a['agreement_with_majority']):>8}"
                       f"{_fmt(a['dawid_skene_accuracy']):>8}{_fmt(a['length_bias'], '+.3f'):>9}"
                       f"{_fmt(a['position_bias'], '+.3f'):>9}{_fmt(a['honeypot_accuracy']):>9}  {flags}")
    ranked = sorted((it for it in report["items"] if it["suspicion"] is not None), key=lambda it: -it["suspicion"])
    if ranked:
        out += ["", f"most suspicious items (of {len(ranked)} scored):"]
        out += [f"  {it['suspicion']:.3f}  {it['id']}  lines {','.join(map(str, it['lines'][:5]))}"
                f"  ({it['suspicion_source']})" for it in ranked[:top]]
    return "\n".join(out)
