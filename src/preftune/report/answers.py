"""The answers themselves: the judged samples of `eval policy` and the cases of `eval regress`, the
baseline's and the tuned model's responses side by side, filterable by verdict and category.

Only what the evaluators stored is shown (no model runs here). Every text is escaped; filtering is
a few lines of inline script over data- attributes, and without script every row is simply shown.
"""

from __future__ import annotations

from typing import Any

from preftune.report import shapes
from preftune.report.fmt import esc, fmt_fixed, fmt_num, na, section
from preftune.report.headline import case_anchor

OUTCOME_LABEL = {"win": "model wins", "tie": "tie", "loss": "baseline wins", "unjudged": "no verdict"}
SHORT = {"correctness": "correct", "instruction_following": "instructions", "harmlessness": "harmless",
         "concision": "concise"}
STATUS_LABEL = {"regressed": "regressed", "fixed": "fixed", "pass": "both pass", "fail": "both fail",
                "unknown": "unknown"}


def _text(t: str | None) -> str:
    if t is None:
        return "<div class='text na'>(not stored)</div>"
    return f"<div class='text'>{esc(t)}</div>" if t else "<div class='text na'>(empty)</div>"


def filters(table_id: str, facets: list[tuple[str, str, list[tuple[str, str, int]]]], total: int) -> str:
    """Select boxes over a table's rows: facets are (data attribute, label, [(value, label, count)])."""
    boxes = []
    for attr, label, options in facets:
        if len(options) < 2:
            continue
        opts = "".join(f"<option value='{esc(v)}'>{esc(lab)} ({n})</option>" for v, lab, n in options)
        boxes.append(f"<label>{esc(label)} <select data-filter='{esc(attr)}'><option value=''>all ({total})</option>"
                     f"{opts}</select></label>")
    return (f"<div class='filters' data-table='{esc(table_id)}'>{''.join(boxes)}"
            f"<span class='shown'>{total} of {total} shown</span></div>")


def _counts(values: list[str | None], labels: dict[str, str] | None = None) -> list[tuple[str, str, int]]:
    seen: dict[str, int] = {}
    for v in values:
        if v is not None:
            seen[v] = seen.get(v, 0) + 1
    order = list(labels) if labels else sorted(seen)
    return [(v, (labels or {}).get(v, v), seen[v]) for v in order if v in seen]


def scores_html(s: dict) -> str:
    """The judge's scores of both responses and, for the gold judge, each attribute's."""
    parts = []
    m, b = s["score_model"], s["score_baseline"]
    if m is None and b is None:
        m, b = s["gold_model"].get("total"), s["gold_baseline"].get("total")
    if m is not None or b is not None:
        d = m - b if m is not None and b is not None else None
        delta = "?" if d is None else "±0" if d == 0 else ("+" if d > 0 else "") + fmt_num(d, 3)
        parts.append(f"<div>{esc(fmt_num(b, 3))} → <b>{esc(fmt_num(m, 3))}</b> <small>({esc(delta)})</small></div>")
    # attributes that apply to this prompt (the gold scorer gives None to the others)
    attrs = [k for k in dict.fromkeys([*s["gold_baseline"], *s["gold_model"]]) if k != "total"
             and (s["gold_baseline"].get(k) is not None or s["gold_model"].get(k) is not None)]
    if attrs:
        rows = "".join(f"<tr><th>{esc(SHORT.get(a, a))}</th><td>{esc(fmt_num(s['gold_baseline'].get(a), 3))}</td>"
                       f"<td>{esc(fmt_num(s['gold_model'].get(a), 3))}</td></tr>" for a in attrs)
        parts.append(f"<table class='attrs'><tr><th></th><th>base</th><th>model</th></tr>{rows}</table>")
    return "".join(parts) or "<span class='na'>—</span>"


def answers_section(pol: Any) -> str:
    title = "The answers: baseline and tuned model side by side"
    if not isinstance(pol, dict):
        return section("answers", title, na("no eval/policy.json (run `preftune eval policy`)"))
    samples = shapes.policy_samples(pol)
    if not samples:
        return section("answers", title, na("eval/policy.json stores no samples"))
    has_cat = any(s["category"] for s in samples)
    has_scores = any(s["score_model"] is not None or s["gold_model"] for s in samples)
    seed = f" with seed {esc(fmt_num(pol['seed']))}" if shapes.is_num(pol.get("seed")) else ""
    tokens = f", at most {esc(fmt_num(pol['max_new_tokens']))} new tokens" if shapes.is_num(
        pol.get("max_new_tokens")) else ""
    intro = (f"<p>{len(samples)} prompts, each answered once by the baseline "
             f"(<code>{esc(shapes.text_of(pol.get('baseline', '?')))}</code>) and once by the tuned model "
             f"(<code>{esc(shapes.text_of(pol.get('model', '?')))}</code>), sampled at temperature 1{seed}{tokens}. "
             f"The judge (<code>{esc(shapes.text_of(pol.get('judge', '?')))}</code>) gives each pair a verdict from "
             "the tuned model's side; scores read baseline → model.</p>")
    facets = [("outcome", "verdict", _counts([s["outcome"] for s in samples], OUTCOME_LABEL)),
              ("category", "category", _counts([s["category"] for s in samples]))]
    head = ("<tr><th class='c-n'>#</th>" + ("<th class='c-cat'>category</th>" if has_cat else "")
            + "<th>prompt</th><th>baseline</th><th>tuned model</th><th class='c-v'>verdict</th>"
            + ("<th class='c-s'>scores</th>" if has_scores else "") + "</tr>")
    rows = []
    for s in samples:
        i = s["index"]
        cat = f"<td>{esc(s['category'] or '')}</td>" if has_cat else ""
        sc = f"<td>{scores_html(s)}</td>" if has_scores else ""
        rows.append(f"<tr id='answer-{i}' data-outcome='{s['outcome']}' data-category='{esc(s['category'] or '')}'>"
                    f"<td><a href='#answer-{i}'>{i}</a></td>{cat}<td>{_text(s['prompt'])}</td>"
                    f"<td>{_text(s['baseline'])}</td><td>{_text(s['model'])}</td>"
                    f"<td><span class='badge {s['outcome']}'>{esc(OUTCOME_LABEL[s['outcome']])}</span></td>{sc}</tr>")
    table = f"<table class='answers' id='answers-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return section("answers", title, intro + filters("answers-table", facets, len(samples)) + table)


def case_status(c: dict) -> str:
    b, m = c["baseline_pass"], c["model_pass"]
    if b is None or m is None:
        return "unknown"
    return "regressed" if b and not m else "fixed" if m and not b else "pass" if m else "fail"


def _pass_mark(p: bool | None) -> str:
    return {True: "<span class='pass'>passes</span>", False: "<span class='fail'>fails</span>"}.get(
        p, "<span class='na'>?</span>")


def regressions_section(reg: Any) -> str:
    title = "Regression suite: cases the tuned model must not break"
    cases = shapes.regress_cases(reg)
    if not cases:
        why = "eval/regress.json has no readable cases" if reg is not None else \
            "no eval/regress.json (run `preftune eval regress`)"
        return section("regressions", title, na(why))
    rank = {"regressed": 0, "fixed": 1, "fail": 2, "unknown": 3, "pass": 4}
    cases = sorted(cases, key=lambda c: rank[case_status(c)])
    status = [case_status(c) for c in cases]
    n = {k: status.count(k) for k in STATUS_LABEL}
    intro = (f"<p>{len(cases)} cases, answered greedily by both models: <b>{n['regressed']} regressed</b> "
             f"(the baseline passes, the tuned model fails), {n['fixed']} fixed, {n['pass']} pass for both, "
             f"{n['fail']} fail for both. Regressions come first.</p>")
    has_cat = any(c["category"] for c in cases)
    facets = [("status", "status", _counts(status, STATUS_LABEL)),
              ("category", "category", _counts([c["category"] for c in cases]))]
    head = ("<tr><th>case</th>" + ("<th>category</th>" if has_cat else "") +
            "<th>prompt</th><th>baseline</th><th>tuned model</th><th>failed checks (model)</th></tr>")
    rows, anchors = [], set()
    for c, st in zip(cases, status):
        anchor = case_anchor(c["id"])
        anchor = anchor if anchor not in anchors else f"{anchor}-{len(anchors)}"
        anchors.add(anchor)
        cat = f"<td>{esc(c['category'] or '')}</td>" if has_cat else ""
        failed = "; ".join(c["failed"])
        rows.append(f"<tr id='{anchor}' class='case-{st}' data-status='{st}' "
                    f"data-category='{esc(c['category'] or '')}'>"
                    f"<td><a href='#{anchor}'>{esc(c['id'])}</a> "
                    f"<span class='badge {st}'>{STATUS_LABEL[st]}</span></td>"
                    f"{cat}<td>{_text(c['prompt'])}</td><td>{_pass_mark(c['baseline_pass'])}{_text(c['baseline_response'])}</td>"
                    f"<td>{_pass_mark(c['model_pass'])}{_text(c['model_response'])}</td><td>{esc(failed)}</td></tr>")
    table = f"<table class='answers' id='regress-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return section("regressions", title, intro + filters("regress-table", facets, len(cases)) + table)


def win_share(samples: list[dict]) -> str:
    """'38 wins, 7 ties, 19 losses' of a sample list (for compare pages)."""
    n = {k: sum(s["outcome"] == k for s in samples) for k in ("win", "tie", "loss")}
    return f"{n['win']} wins, {n['tie']} ties, {n['loss']} losses"


def fmt_verdict(v: float | None) -> str:
    return "—" if v is None else fmt_fixed(v, 1)
