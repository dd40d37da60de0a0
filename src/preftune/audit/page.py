"""The audit report as one self-contained HTML page (`preftune data audit --html OUT`), built with the run
report's page frame (report.html.page: CSS, the error hook and the figure check the browser test reads).

Sections: what was skipped and why, agreement, the annotator table (sortable), the Cohen's kappa matrix,
bias bars (inline SVG: no plotting library needed), and the most suspicious items (sortable).
"""

from __future__ import annotations

from pathlib import Path

from preftune.report.fmt import esc, fmt_num, kv_table, na, section
from preftune.report.html import page, write_page

MAX_ITEMS = 300  # suspicious items shown on the page (all of them are in the JSON report)

# Click a header of a table.sortable to sort by it (numbers numerically, "-" last); click again to reverse.
SORT = """document.querySelectorAll('table.sortable').forEach(function(t){var hs=t.tHead.rows[0].cells;
for(var c=0;c<hs.length;c++){(function(c){hs[c].style.cursor='pointer';hs[c].addEventListener('click',function(){
var rows=Array.prototype.slice.call(t.tBodies[0].rows),dir=hs[c].getAttribute('data-dir')==='asc'?-1:1;
hs[c].setAttribute('data-dir',dir===1?'asc':'desc');rows.sort(function(a,b){
var x=a.cells[c].getAttribute('data-v'),y=b.cells[c].getAttribute('data-v');var fx=parseFloat(x),fy=parseFloat(y);
if(isNaN(fx)&&isNaN(fy)){return dir*String(x).localeCompare(String(y));}\
if(isNaN(fx)){return 1;}if(isNaN(fy)){return -1;}
return dir*(fx-fy);});rows.forEach(function(r){t.tBodies[0].appendChild(r);});});})(c);}});"""


def _num(x, sig: int = 3) -> str:
    return "-" if x is None else fmt_num(x, sig)


def _cell(v, text: str | None = None) -> str:
    key = "" if v is None else (str(v) if isinstance(v, (int, float)) else esc(v))
    return f"<td data-v='{key}'>{esc(text if text is not None else ('-' if v is None else v))}</td>"


def _table(tid: str, heads: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    return f"<table id='{tid}' class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _skipped(rep: dict) -> str:
    parts = [f"<div class='finding info'><b>skipped {esc(s['part'])}</b>: {esc(s['reason'])}</div>"
             for s in rep["skipped"]]
    parts += [f"<div class='finding warning'>{esc(n)}</div>" for n in rep["notes"][:50]]
    return "".join(parts) or "<div class='ok'>every part of the audit ran</div>"


def _agreement(rep: dict) -> str:
    ag = rep["agreement"]
    if not ag:
        return na("agreement (see the skipped parts above)")
    f = ag["fleiss"]
    return kv_table([("items with 2+ labels", esc(ag["num_items"])), ("labels on them", esc(ag["num_labels"])),
                     ("raw agreement", _num(ag["raw"])),
                     ("Fleiss' kappa", (f"{_num(ag['fleiss_kappa'])} ({esc(f['num_items'])} items with "
                                       f"{esc(f['num_raters'])} labels each)")),
                     ("Krippendorff's alpha (nominal)", _num(ag["krippendorff_alpha"]))])


def _annotators(rep: dict) -> str:
    if not rep["annotators"]:
        return na("per-annotator statistics (no annotator column)")
    rows = []
    for a in rep["annotators"]:
        hp = a["honeypot_accuracy"]
        hp_text = "-" if hp is None else f"{_num(hp)} [{_num(a['honeypot_interval'][0])}, " \
                                         f"{_num(a['honeypot_interval'][1])}] n={a['num_honeypots']}"
        flags = "; ".join(f"{f['flag']}: {f['rule']} ({_num(f['value'])})" for f in a["flags"]) or "-"
        rows.append("<tr>" + _cell(a["annotator"]) + _cell(a["num_labels"])
                    + _cell(a["agreement_with_majority"], _num(a["agreement_with_majority"]))
                    + _cell(a["dawid_skene_accuracy"], _num(a["dawid_skene_accuracy"]))
                    + _cell(a["tie_rate"], _num(a["tie_rate"]))
                    + _cell(a["length_bias"], _num(a["length_bias"]))
                    + _cell(a["position_bias"], _num(a["position_bias"]))
                    + _cell(hp, hp_text) + _cell(len(a["flags"]), flags) + "</tr>")
    return _table("annotators-table", ["annotator", "labels", "agreement with majority", "Dawid-Skene accuracy",
                                       "tie rate", "length bias", "position bias", "honeypot accuracy [95%]",
                                       "flags"], rows)


def _matrix(rep: dict) -> str:
    ag = rep["agreement"]
    if not ag or not ag["cohen"]:
        return na("Cohen's kappa matrix (no annotator pair shares 2 items)")
    names = sorted({p["a"] for p in ag["cohen"]} | {p["b"] for p in ag["cohen"]})
    k = {(p["a"], p["b"]): p for p in ag["cohen"]}
    k.update({(p["b"], p["a"]): p for p in ag["cohen"]})
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = []
    for a in names:
        cells = "".join(f"<td>{_num(k[(a, b)]['kappa'])} <span class='na'>n={k[(a, b)]['num_shared']}</span></td>"
                        if (a, b) in k else "<td class='na'>-</td>" for b in names)
        body.append(f"<tr><th>{esc(a)}</th>{cells}</tr>")
    return f"<table id='kappa-matrix'><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _bars(rep: dict, key: str, ref: float | None, title: str) -> str:
    """One SVG bar per annotator of a share in [0, 1], with the reference share as a dashed line."""
    vals = [(a["annotator"], a[key]) for a in rep["annotators"] if a[key] is not None]
    if not vals:
        return ""
    w, bar, left = 520, 18, 150
    h = 30 + bar * len(vals)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img'>",
           f"<text x='4' y='14' font-size='12'>{esc(title)}</text>"]
    for i, (name, v) in enumerate(vals):
        y = 22 + i * bar
        out.append(f"<text x='4' y='{y + 12}' font-size='11'>{esc(str(name)[:22])}</text>"
                   f"<rect x='{left}' y='{y}' width='{(w - left - 60) * v:.1f}' height='{bar - 4}' fill='#1a73e8'/>"
                   f"<text x='{left + (w - left - 60) * v + 4:.1f}' y='{y + 12}' font-size='11'>{v:.2f}</text>")
    if ref is not None:
        x = left + (w - left - 60) * ref
        out.append(f"<line x1='{x:.1f}' y1='18' x2='{x:.1f}' y2='{h}' stroke='#d93025' stroke-dasharray='4 3'/>")
    out.append("</svg>")
    return (f"<figure class='plot' data-plot='{esc(key)}'>{''.join(out)}"
            f"<figcaption>{esc(title)}; dashed: the reference</figcaption></figure>")


def _suspicious(rep: dict) -> str:
    ranked = sorted((it for it in rep["items"] if it["suspicion"] is not None), key=lambda it: -it["suspicion"])
    if not ranked:
        return na("suspicion scores (run with --folds K, or give multi-labelled rows for Dawid-Skene)")
    rows = []
    for it in ranked[:MAX_ITEMS]:
        v = it["verdicts"]
        rows.append("<tr>" + _cell(it["id"]) + _cell(it["lines"][0], ",".join(map(str, it["lines"][:6])))
                    + _cell(it["suspicion"], _num(it["suspicion"]))
                    + _cell(it["oof_p_chosen"], _num(it["oof_p_chosen"]))
                    + _cell(it["ds_p_chosen"], _num(it["ds_p_chosen"]))
                    + _cell(it["num_labels"], f"{v['chosen']} / {v['rejected']} / {v['tie']}")
                    + _cell(it["suspicion_source"]) + "</tr>")
    note = f"<p class='sub'>top {len(rows)} of {len(ranked)} scored items; all are in the JSON report</p>"
    return note + _table("suspicious-table", ["id", "lines", "suspicion", "held-out P(chosen)", "Dawid-Skene P(chosen)",
                                              "labels chosen / rejected / tie", "source"], rows)


def build_audit_page(rep: dict) -> str:
    ref = rep.get("length_reference", {}).get("median_labeller")
    bias = (_bars(rep, "longer_wins_share", ref, "share of 'longer wins' per annotator")
            + _bars(rep, "first_shown_wins_share", 0.5, "share of 'first shown wins' per annotator"))
    body = (f"<h1>Audit of {esc(rep.get('input', ''))}</h1><p class='sub'>{esc(rep['num_rows'])} rows, "
            f"{esc(rep['num_items'])} items, {esc(rep['num_multi_labelled_items'])} with 2+ labels; ties: "
            f"{esc(rep['ties'])}</p>"
            + section("skipped", "what ran", _skipped(rep))
            + section("agreement", "agreement", _agreement(rep))
            + section("annotators", "annotators", _annotators(rep))
            + section("matrix", "agreement matrix (Cohen's kappa)", _matrix(rep))
            + section("bias", "bias", f"<div class='grid'>{bias}</div>" if bias else na("bias plots"))
            + section("suspicious", "suspicious items", _suspicious(rep)))
    html = page(f"audit: {rep.get('input', '')}", ["skipped", "agreement", "annotators", "matrix", "bias",
                                                  "suspicious"], body)
    return html.replace("</body>", f"<script>{SORT}</script></body>")


def write_audit_page(rep: dict, target: Path) -> Path:
    return write_page(target, build_audit_page(rep))
