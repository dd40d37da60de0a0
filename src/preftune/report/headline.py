"""The headline at the top of every report: did it get better, in words and numbers.

A policy (eval/policy.json): win rate with its interval and wins/ties/losses, length-controlled win
rate, KL, regressions, alignment tax when measured, one verdict line. A reward model (eval/rm.json):
accuracy with its interval against the "longer wins" baseline, chosen-shorter accuracy, calibration.
An online-RL run (`preftune train rl`): the held-out reward at step 0 against the last evaluation (the
gain and "rose" / "did not rise" / "fell"), final KL, completion length, tied groups and the
over-optimisation guard's verdict (eval/overoptimisation.json). An SFT run: the eval loss's first and
last values. Every warning is counted and linked.

Each number is a `num_span` tagged with the JSON file and key it came from, and rounded to the
precision its uncertainty supports (fmt.decimals_for).
"""

from __future__ import annotations

import math
from typing import Any

from preftune.report import shapes
from preftune.report.blocks import Block
from preftune.report.blocks import metric_span as _metric
from preftune.report.blocks import n_span as _n
from preftune.report.findings import Finding
from preftune.report.fmt import (
    decimals_for,
    esc,
    fmt_fixed,
    fmt_num,
    num_span,
    proportion_se,
    wilson_interval,
)
from preftune.report.plots import Series

Z95 = 1.959964
RL_STAGES = ("rl", "grpo", "rloo", "ppo", "online_dpo")


# ----------------------------------------------------------------------------------------------
# policy


def win_rate_decimals(pol: Any) -> int:
    ci = shapes.interval(pol, "win_rate_ci95", "win_rate_ci")
    n = shapes.num(pol, "num_prompts")
    se = (ci[1] - ci[0]) / (2 * Z95) if ci and math.isfinite(ci[1] - ci[0]) else None
    if not se and n and n > 0:
        se = proportion_se(0.5, int(n))
    return decimals_for(se)


def policy_verdict(pol: Any) -> tuple[str, str]:
    """(level, sentence) from the win rate's interval."""
    ci = shapes.interval(pol, "win_rate_ci95", "win_rate_ci")
    d = win_rate_decimals(pol)
    if ci is None or not all(math.isfinite(x) for x in ci):
        return "unknown", "Cannot say: eval/policy.json has no usable win-rate interval."
    shown = f"[{fmt_fixed(ci[0], d)}, {fmt_fixed(ci[1], d)}]"
    if ci[0] > 0.5:
        return "good", f"Better than the baseline: the win rate's 95% interval {shown} is above 0.5."
    if ci[1] < 0.5:
        return "bad", f"Worse than the baseline: the win rate's 95% interval {shown} is below 0.5."
    return "neutral", f"Not shown better than the baseline: the win rate's 95% interval {shown} contains 0.5."


def _regress_row(reg: Any) -> tuple[str, str]:
    if not isinstance(reg, (dict, list)):
        return "regressions", "<span class='na'>not measured (run <code>preftune eval regress</code>)</span>"
    cases = shapes.regress_cases(reg)
    regressed = [c for c in cases if c["regressed"]]
    src = "regress"
    n_reg = shapes.num(reg, "num_regressions")
    count = _n(int(n_reg), src, "num_regressions") if n_reg is not None and math.isfinite(n_reg) \
        else esc(str(len(regressed)))
    total = _n(reg["num_cases"], src, "num_cases") if isinstance(reg, dict) and shapes.is_num(
        reg.get("num_cases")) else esc(str(len(cases)))
    links = ", ".join(f"<a href='#{case_anchor(c['id'])}'>{esc(c['id'])}</a>" for c in regressed[:8])
    more = f" and {len(regressed) - 8} more" if len(regressed) > 8 else ""
    passed = ""
    if isinstance(reg, dict) and shapes.is_num(reg.get("model_passed")) and shapes.is_num(reg.get("baseline_passed")):
        passed = (f"; the model passes {_n(reg['model_passed'], src, 'model_passed')}, the baseline "
                  f"{_n(reg['baseline_passed'], src, 'baseline_passed')}")
    return "regressions", f"{count} of {total} cases{': ' + links + more if links else ''}{passed}"


def case_anchor(case_id: str) -> str:
    """The element id of a regression case's row (ids are data: anything unsafe becomes _)."""
    return "regress-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in case_id)


def _tax_row(evals: dict) -> tuple[str, str] | None:
    """Alignment tax: shown only when an evaluator measured it (a top-level `alignment_tax` number)."""
    for name, content in evals.items():
        v = shapes.num(content, "alignment_tax")
        if v is not None:
            return "alignment tax", f"{_n(v, name, 'alignment_tax')} <small>(eval/{esc(name)}.json)</small>"
    return None


def policy_block(pol: dict, reg: Any, evals: dict) -> Block:
    level, verdict = policy_verdict(pol)
    d = win_rate_decimals(pol)
    src = "policy"
    ci_key = shapes.interval_key(pol)
    rows = []
    wr = shapes.num(pol, "win_rate")
    if wr is not None:
        ci = (f" <span class='ci'>[{_n(pol[ci_key][0], src, ci_key + '.0', d)}, "
              f"{_n(pol[ci_key][1], src, ci_key + '.1', d)}]</span> <small>95% bootstrap interval</small>"
              if ci_key else "")
        over = (f" over {_n(pol['num_prompts'], src, 'num_prompts')} prompts"
                if shapes.is_num(pol.get("num_prompts")) else "")
        judge = f", judged by <code>{esc(pol['judge'])}</code>" if isinstance(pol.get("judge"), str) else ""
        rows.append(("win rate", f"<b>{_n(wr, src, 'win_rate', d)}</b>{ci}{over}{judge}"))
    if all(shapes.is_num(pol.get(k)) for k in ("wins", "ties", "losses")):
        rows.append(("wins / ties / losses", " / ".join(_n(pol[k], src, k) for k in ("wins", "ties", "losses"))
                     + " <a href='#answers'>read the answers</a>"))
    lc = shapes.num(pol, "lc_win_rate")
    if lc is not None:
        lens = ""
        if shapes.is_num(pol.get("mean_length_model")) and shapes.is_num(pol.get("mean_length_baseline")):
            lens = (f" <small>mean length {_n(pol['mean_length_model'], src, 'mean_length_model')} vs "
                    f"{_n(pol['mean_length_baseline'], src, 'mean_length_baseline')} characters</small>")
        rows.append(("length-controlled win rate", _n(lc, src, "lc_win_rate", d) + lens))
    rows.append(_kl_row(pol))
    rows.append(_regress_row(reg))
    tax = _tax_row(evals)
    if tax:
        rows.append(tax)
    notes = []
    if wr is not None and lc is not None and wr > 0.5 >= lc:
        notes.append(f"The length-controlled win rate ({esc(fmt_fixed(lc, d))}) is not above 0.5: the wins may "
                     "come from answering longer. See <a href='#length-bias'>length bias</a>.")
    n_reg = len([c for c in shapes.regress_cases(reg) if c["regressed"]])
    if n_reg:
        notes.append(f"{n_reg} regression case(s) that the baseline passes now fail: "
                     "<a href='#regressions'>see them</a>.")
    return Block("Policy against its baseline", level, verdict, notes, rows)


def _kl_row(pol: dict) -> tuple[str, str]:
    k3, k1 = shapes.num(pol, "kl_k3"), shapes.num(pol, "kl_k1")
    if k3 is None and k1 is None:
        return "KL(model ‖ baseline)", ("<span class='na'>not measured (the two tokenizers differ, "
                                         "or no KL in the file)</span>")
    parts = []
    if k3 is not None:
        parts.append(f"{num_span(fmt_num(k3, 3), 'policy', 'kl_k3')} nats <small>(k3 estimator)</small>")
    if k1 is not None:
        parts.append(f"{num_span(fmt_num(k1, 3), 'policy', 'kl_k1')} <small>(k1)</small>")
    return "KL(model ‖ baseline)", ", ".join(parts) + " <small>per sequence, on the model's own samples</small>"


# ----------------------------------------------------------------------------------------------
# reward model


def rm_block(rm: dict) -> Block:
    src = "rm"
    acc = shapes.num(rm, "accuracy")
    n_pairs, n_ties = shapes.num(rm, "num_pairs"), shapes.num(rm, "num_ties") or 0.0
    n = int(n_pairs - n_ties) if n_pairs is not None and math.isfinite(n_pairs) and math.isfinite(n_ties) else 0
    se = proportion_se(acc, n) if acc is not None and n > 0 else None
    d = decimals_for(se)
    base = shapes.num(rm, "length_baseline_accuracy")
    ci = wilson_interval(acc * n, n) if acc is not None and math.isfinite(acc) and 0 <= acc <= 1 and n > 0 else None
    ref, ref_name = (base, "the “longer wins” baseline") if base is not None else (0.5, "chance")
    if ci is None:
        level, verdict = "unknown", "Cannot say: eval/rm.json has no usable accuracy."
    elif ci[0] > ref:
        level, verdict = "good", (f"Orders held-out pairs better than {ref_name} ({fmt_fixed(ref, d)}): its "
                                  f"accuracy's 95% interval [{fmt_fixed(ci[0], d)}, "
                                  f"{fmt_fixed(ci[1], d)}] is above it.")
    elif ci[1] < ref:
        level, verdict = "bad", (f"Worse than {ref_name} ({fmt_fixed(ref, d)}): its accuracy's 95% interval "
                                 f"[{fmt_fixed(ci[0], d)}, {fmt_fixed(ci[1], d)}] is below it.")
    else:
        level, verdict = "neutral", (f"Not shown better than {ref_name} ({fmt_fixed(ref, d)}): its accuracy's "
                                     f"95% interval [{fmt_fixed(ci[0], d)}, {fmt_fixed(ci[1], d)}] contains it.")
    rows = []
    if acc is not None:
        interval = (f" <span class='ci'>[{esc(fmt_fixed(ci[0], d))}, {esc(fmt_fixed(ci[1], d))}]</span> "
                    "<small>95% Wilson interval</small>" if ci else "")
        ties = f" ({_n(rm['num_ties'], src, 'num_ties')} close pairs counted apart)" if shapes.is_num(
            rm.get("num_ties")) else ""
        count = f" on {esc(str(n))} held-out pairs{ties}" if n else ""
        rows.append(("accuracy", f"<b>{_n(acc, src, 'accuracy', d)}</b>{interval}{count}"))
    if base is not None:
        rows.append(("“longer wins” baseline", _n(base, src, "length_baseline_accuracy", d)))
    shorter, longer = shapes.num(rm, "accuracy_chosen_shorter"), shapes.num(rm, "accuracy_chosen_longer")
    if shorter is not None or longer is not None:
        parts = []
        for label, key, v in (("chosen shorter", "accuracy_chosen_shorter", shorter),
                              ("chosen longer", "accuracy_chosen_longer", longer)):
            if v is not None:
                cnt = rm.get(key.replace("accuracy_", "num_"))
                parts.append(f"{label} {_n(v, src, key, d)}" + (
                    f" <small>(n = {_n(cnt, src, key.replace('accuracy_', 'num_'))})</small>"
                    if shapes.is_num(cnt) else ""))
        rows.append(("accuracy by which answer is longer", "; ".join(parts)))
    ece = shapes.num(rm, "ece")
    if ece is not None:
        why = "<small>0 = probabilities match frequencies; <a href='#calibration'>reliability diagram</a></small>"
        rows.append(("calibration error (ECE)", f"{num_span(fmt_num(ece, 3), src, 'ece')} {why}"))
    corr = rm.get("reward_length_corr")
    rho = shapes.corr_value(corr)
    if rho is not None:
        key = "reward_length_corr.spearman" if isinstance(corr, dict) and shapes.is_num(corr.get("spearman")) else (
            "reward_length_corr.pearson" if isinstance(corr, dict) else "reward_length_corr")
        rows.append(("reward–length correlation", f"{num_span(fmt_num(rho, 3), src, key)} <small>(Spearman)</small>"))
    notes = []
    if shorter is not None and shorter < 0.5:
        notes.append(f"It prefers longer answers: when the chosen answer is the shorter one, accuracy is "
                     f"{esc(fmt_fixed(shorter, d))}. See <a href='#length-bias'>length bias</a>.")
    return Block("Reward model on held-out pairs", level, verdict, notes, rows)


# ----------------------------------------------------------------------------------------------
# training (SFT: the headline; other stages: one row)


def _ends(s: Series) -> tuple[tuple[float, float], tuple[float, float]] | None:
    pts = [(x, y) for x, y in zip(s.steps, s.values) if math.isfinite(y)]
    return (pts[0], pts[-1]) if len(pts) >= 2 else None


def training_block(series: dict[str, Series], stage: str | None) -> Block:
    """First and last logged values of the eval loss (else the train loss)."""
    rows = []
    for key in ("eval/loss", "eval/ppl", "train/loss"):
        s = series.get(key)
        ends = _ends(s) if s else None
        if ends:
            (x0, y0), (x1, y1) = ends
            rows.append((key, f"{_metric(y0, key, x0)} at step {x0:g} → <b>{_metric(y1, key, x1)}</b> at step {x1:g}"))
    ev = _ends(series["eval/loss"]) if "eval/loss" in series else None
    tr = _ends(series["train/loss"]) if "train/loss" in series else None
    if ev:
        (_, a), (_, b) = ev
        level, verdict = ("good", f"The held-out loss fell from {fmt_num(a)} to {fmt_num(b)}.") if b < a else (
            "bad", (f"The held-out loss did not fall ({fmt_num(a)} → {fmt_num(b)}): "
                    "over-fitting or too high a learning rate?"))
    elif tr:
        level, verdict = "neutral", (f"No held-out split was logged: the training loss went from {fmt_num(tr[0][1])} "
                                     f"to {fmt_num(tr[1][1])}, which says nothing about generalisation.")
    else:
        level, verdict = "unknown", "No loss was logged (metrics.jsonl is missing or empty)."
    return Block(f"{(stage or 'training').upper()} training", level, verdict, [], rows)


def not_judged_block(stage: str | None) -> Block:
    return Block("Policy against its baseline", "unknown",
                 "Not judged yet: no eval/policy.json. Run <code>preftune eval policy RUN --prompts FILE "
                 "--baseline MODEL</code>, then the report again.", [], [])


def blocks_for(stage: str | None, evals: dict, series: dict[str, Series], config: dict | None = None) -> list[Block]:
    """The headline blocks of a run: an RL run's held-out reward first, policy and/or reward model when
    evaluated, training otherwise."""
    out = []
    pol, rm = evals.get("policy"), evals.get("rm")
    if stage in RL_STAGES:
        from preftune.report.rl_view import rl_block  # rl_view builds on this module's blocks

        out.append(rl_block(series, evals, config))
    if isinstance(pol, dict):
        out.append(policy_block(pol, evals.get("regress"), evals))
    elif stage in ("dpo", "policy"):
        out.append(not_judged_block(stage))
    if isinstance(rm, dict):
        out.append(rm_block(rm))
    if not out or stage == "sft":
        out.append(training_block(series, stage))
    return out


def warnings_row(findings: list[Finding]) -> str:
    if not findings:
        return "<span class='okay'>none</span>"
    by = {lv: sum(f.level == lv for f in findings) for lv in ("error", "warning", "info")}
    parts = [f"{n} {lv}{'s' if n != 1 else ''}" for lv, n in by.items() if n]
    return f"<a href='#warnings'><b>{len(findings)}</b></a>: " + ", ".join(esc(p) for p in parts)


def render_block(b: Block) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in b.rows)
    notes = "".join(f"<p class='caveat'>{n}</p>" for n in b.notes)
    return (f"<div class='block'><h3>{esc(b.title)}</h3><p class='verdict {esc(b.level)}'>{b.verdict}</p>"
            f"{notes}{f'<table class=headline>{rows}</table>' if rows else ''}</div>")


def render_headline(title: str, subtitle: str, blocks: list[Block], findings: list[Finding]) -> str:
    return (f"<section id='headline'><h1>{esc(title)}</h1><p class='sub'>{subtitle}</p>"
            + "".join(render_block(b) for b in blocks)
            + f"<p class='warn-count'>Warnings: {warnings_row(findings)}</p></section>")
