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
from dataclasses import dataclass, field
from typing import Any

from preftune.report import shapes
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


@dataclass
class Block:
    """One headline block: a verdict (level "good" | "neutral" | "bad" | "unknown") and its rows."""
    title: str
    level: str
    verdict: str
    notes: list[str] = field(default_factory=list)  # caveats under the verdict, HTML
    rows: list[tuple[str, str]] = field(default_factory=list)  # (label, HTML)


def _n(v: Any, src: str, key: str, decimals: int | None = None, run: int | None = None) -> str:
    text = fmt_fixed(v, decimals) if decimals is not None and isinstance(v, float) else fmt_num(v)
    return num_span(text, src, key, run)


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
        over = f" over {_n(pol['num_prompts'], src, 'num_prompts')} prompts" if shapes.is_num(pol.get("num_prompts")) else ""
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
        return "KL(model ‖ baseline)", "<span class='na'>not measured (the two tokenizers differ, or no KL in the file)</span>"
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
                                  f"accuracy's 95% interval [{fmt_fixed(ci[0], d)}, {fmt_fixed(ci[1], d)}] is above it.")
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
                    f" <small>(n = {_n(cnt, src, key.replace('accuracy_', 'num_'))})</small>" if shapes.is_num(cnt) else ""))
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


def _metric(v: float, key: str, step: float) -> str:
    return f"<span class='num' data-src='metrics' data-key='{esc(key)}' data-step='{step:g}'>{esc(fmt_num(v))}</span>"


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
            "bad", f"The held-out loss did not fall ({fmt_num(a)} → {fmt_num(b)}): over-fitting or too high a learning rate?")
    elif tr:
        level, verdict = "neutral", (f"No held-out split was logged: the training loss went from {fmt_num(tr[0][1])} "
                                     f"to {fmt_num(tr[1][1])}, which says nothing about generalisation.")
    else:
        level, verdict = "unknown", "No loss was logged (metrics.jsonl is missing or empty)."
    return Block(f"{(stage or 'training').upper()} training", level, verdict, [], rows)


# ----------------------------------------------------------------------------------------------
# online RL (`preftune train rl`): the held-out reward logged along training


RL_STAGES = ("rl", "grpo", "rloo", "ppo", "online_dpo")


def _finite_points(s: Series | None) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(s.steps, s.values) if math.isfinite(x) and math.isfinite(y)] if s else []


def heldout_gain(series: dict[str, Series], key: str = "eval/reward") -> dict | None:
    """The held-out reward's start (the step-0 evaluation, else the first one), end (the evaluation at
    the highest step, the last logged of that step) and gain = end - start; None with < 2 evaluations."""
    pts = _finite_points(series.get(key))
    if len(pts) < 2:
        return None
    start = next((p for p in pts if p[0] == 0), pts[0])
    last_step = max(x for x, _ in pts)
    end = [p for p in pts if p[0] == last_step][-1]
    if end[0] <= start[0]:
        return None
    return {"start": start, "end": end, "gain": end[1] - start[1], "num_evals": len({x for x, _ in pts})}


def gain_word(gain: float, scale: float) -> str:
    """"rose" | "did not rise" | "fell": the sign of the gain, a difference below float noise being none
    (the same model scored twice on the same prompts gives the same mean)."""
    if abs(gain) <= 1e-9 * max(1.0, abs(scale)):
        return "did not rise"
    return "rose" if gain > 0 else "fell"


def _signed(v: float) -> str:
    return ("+" if v > 0 else "−" if v < 0 else "") + fmt_num(abs(v))


def _derived(text: str, of: str) -> str:
    """A number computed here from metrics.jsonl (not a value in any file), e.g. a gain or a mean."""
    return f"<span class='derived' data-of='{esc(of)}'>{esc(text)}</span>"


def _span_of(s: Series | None, key: str, unit: str = "") -> str | None:
    """"first at step a → last at step b" of a metric (tagged), None when fewer than 2 finite points."""
    pts = _finite_points(s)
    if len(pts) < 2:
        return None
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    return f"{_metric(y0, key, x0)} at step {x0:g} → <b>{_metric(y1, key, x1)}</b>{unit} at step {x1:g}"


def _last_point(s: Series | None) -> tuple[float, float] | None:
    pts = _finite_points(s)
    return pts[-1] if pts else None


def rl_verdict(series: dict[str, Series], judge: str = "eval_reward") -> tuple[str, str]:
    """(level, sentence): did the held-out reward rise from the step-0 evaluation to the last one?"""
    g = heldout_gain(series)
    if g is not None:
        (x0, y0), (x1, y1) = g["start"], g["end"]
        word = gain_word(g["gain"], y0)
        level = {"rose": "good", "did not rise": "neutral", "fell": "bad"}[word]
        since = f"step {x0:g}" if x0 == 0 else f"step {x0:g} (the first evaluation; none at step 0)"
        return level, (f"The held-out reward {word}: {fmt_num(y0)} at {since} → {fmt_num(y1)} at step {x1:g} "
                       f"({_signed(g['gain'])}), scored by {esc(judge)}.")
    pts = _finite_points(series.get("eval/reward"))
    if len(pts) == 1:
        return "unknown", (f"Cannot say: only one held-out evaluation was logged (step {pts[0][0]:g}); set "
                           "<code>eval_every</code> so that the run is evaluated again.")
    tr = _finite_points(series.get("train/reward"))
    since = (f": the training reward went from {fmt_num(tr[0][1])} to {fmt_num(tr[-1][1])}, which is the "
             "quantity being optimised, not evidence that the model got better") if len(tr) >= 2 else ""
    return "unknown", ("Cannot say: no held-out reward was logged (train with <code>--eval-prompts FILE</code>)"
                       f"{since}.")


def _guard_row(over: Any, series: dict[str, Series], cfg: dict) -> tuple[tuple[str, str], str | None]:
    """(the headline row of the over-optimisation guard, a caveat when it flagged a step)."""
    label = "over-optimisation guard"
    flag = over.get("flag") if isinstance(over, dict) else None
    if isinstance(flag, dict) and flag.get("flagged") is True and shapes.is_num(flag.get("x")):
        src, xname = "overoptimisation", esc(str(over.get("x_name") or "step"))
        gain = (f": after it the proxy rose by {num_span(fmt_num(flag['proxy_gain']), src, 'flag.proxy_gain')} while "
                f"the judge fell by {num_span(fmt_num(flag['judge_drop']), src, 'flag.judge_drop')}"
                if shapes.is_num(flag.get("proxy_gain")) and shapes.is_num(flag.get("judge_drop")) else "")
        at = num_span(fmt_num(flag["x"]), src, "flag.x")
        row = (f"<b class='fail'>flagged</b>: stop at or before {xname} {at}{gain}. "
               "<a href='#guards'>See the proxy and judge curves</a>")
        note = (f"The over-optimisation guard flags {xname} {esc(fmt_num(flag['x']))}: from there on the training "
                "reward (the proxy) kept rising while the held-out judge kept falling. Use the checkpoint at or "
                "before it, or fix the reward. <a href='#guards'>Evidence</a>.")
        return (label, row), note
    if isinstance(flag, dict) and flag.get("flagged") is False:
        n = len(over["series"]) if isinstance(over.get("series"), list) else None
        over_n = f" over {esc(str(n))} evaluations" if n else ""
        return (label, (f"<span class='okay'>not flagged</span>: the proxy and the held-out judge did not diverge"
                       f"{over_n}. <a href='#guards'>See the curves</a>")), None
    if isinstance(over, dict):
        return (label, "<span class='na'>eval/overoptimisation.json has no usable flag</span>"), None
    if "eval/proxy" in series:
        return (label, ("<span class='na'>not run: no eval/overoptimisation.json (it needs two or more "
                       "evaluations)</span>")), None
    same = f" (<code>{esc(str(cfg['reward']))}</code>)" if isinstance(cfg.get("reward"), str) else ""
    return (label, (f"<span class='na'>not run: the training reward{same} is the held-out judge, so there is no "
                   "proxy to check it against; train with another <code>--reward</code> and "
                   "<code>eval_reward=gold</code> to run it</span>")), None


def rl_block(series: dict[str, Series], evals: dict, cfg: dict | None = None) -> Block:
    """The RL headline: held-out reward at step 0 vs the last evaluation (gain and verdict), the proxy on
    the held-out prompts, the training reward, final KL, completion length, tied groups, truncation and
    the over-optimisation guard (eval/overoptimisation.json)."""
    cfg = cfg if isinstance(cfg, dict) else {}
    judge = str(cfg.get("eval_reward") or "eval_reward")
    level, verdict = rl_verdict(series, judge)
    rows: list[tuple[str, str]] = []
    notes: list[str] = []
    g = heldout_gain(series)
    if g is not None:
        (x0, y0), (x1, y1) = g["start"], g["end"]
        rows.append((f"held-out reward ({judge})",
                     (f"{_metric(y0, 'eval/reward', x0)} at step {x0:g} → <b>{_metric(y1, 'eval/reward', x1)}</b> at "
                     f"step {x1:g}: gain <b>{_derived(_signed(g['gain']), 'eval/reward')}</b> <small>mean over the "
                     f"held-out prompts, {g['num_evals']} evaluations; <a href='#training'>curve</a></small>")))
        best = max(_finite_points(series.get("eval/reward")), key=lambda p: p[1])
        if best[1] > y1 and best[0] != x1:
            rows.append(("best held-out evaluation", (f"{_metric(best[1], 'eval/reward', best[0])} at step "
                                                     f"{best[0]:g} <small>(above the last one: an earlier checkpoint "
                                                     "scored higher)</small>")))
    proxy = _span_of(series.get("eval/proxy"), "eval/proxy")
    if proxy:
        rows.append(("training reward on the held-out prompts (eval/proxy)", proxy))
    train = _span_of(series.get("train/reward"), "train/reward")
    if train:
        spec = f" <small>(<code>{esc(str(cfg['reward']))}</code>, on the training prompts)</small>" if isinstance(
            cfg.get("reward"), str) else " <small>(on the training prompts)</small>"
        rows.append(("training reward", train + spec))
    kl = _last_point(series.get("train/kl"))
    if kl is not None:
        coef = _last_point(series.get("train/kl_coef"))
        with_coef = f"; coefficient {_metric(coef[1], 'train/kl_coef', coef[0])}" if coef else ""
        rows.append(("final KL to the reference", (f"<b>{_metric(kl[1], 'train/kl', kl[0])}</b> nats per token at "
                                                  f"step {kl[0]:g} <small>(k3 estimator, on the sampled completions)"
                                                  f"</small>{with_coef}")))
    else:
        rows.append(("final KL to the reference", ("<span class='na'>not logged (kl_coef = 0 skips the reference "
                                                  "pass)</span>")))
    lengths = [(label, _span_of(series.get(key), key)) for label, key in (
        ("training", "train/completion_length"), ("held-out", "eval/completion_length"))]
    if any(t for _, t in lengths):
        rows.append(("mean completion length (tokens)", "; ".join(f"{label} {t}" for label, t in lengths if t)))
    tied = _finite_points(series.get("train/tied_groups"))
    if tied:
        mean = sum(y for _, y in tied) / len(tied)
        rows.append(("tied-group share", (f"mean <b>{_derived(fmt_num(mean), 'train/tied_groups')}</b> over "
                                         f"{len(tied)} logged steps; last {_metric(tied[-1][1], 'train/tied_groups', tied[-1][0])}"
                                         f" at step {tied[-1][0]:g} <small>(groups whose rewards all tie: zero "
                                         "advantage, no learning signal)</small>")))
        if mean > 0.5:
            notes.append(f"Most groups tie (mean share {esc(fmt_num(mean))}): their completions all score the same, "
                         "so they give no gradient. Raise <code>num_generations</code> or the temperature, or use a "
                         "reward with finer grades. <a href='#training'>Curve</a>.")
    trunc = _last_point(series.get("train/truncated"))
    if trunc is not None:
        rows.append(("truncated completions", (f"{_metric(trunc[1], 'train/truncated', trunc[0])} at step "
                                              f"{trunc[0]:g} <small>(share with no EOS within max_new_tokens)</small>")))
    row, note = _guard_row(evals.get("overoptimisation"), series, cfg)
    rows.append(row)
    if note:
        notes.insert(0, note)
        if level == "good":  # a rise the guard says was partly given back is no clean win
            level = "neutral"
    if not isinstance(evals.get("policy"), dict) and g is not None:
        notes.append("The held-out reward is a mean without an interval. For a paired comparison with the starting "
                     "model, run <code>preftune eval policy RUN --prompts FILE --baseline MODEL</code>.")
    algo = cfg.get("algo")
    title = f"Online RL ({str(algo).upper()}): held-out reward" if isinstance(algo, str) else \
        "Online RL: held-out reward"
    return Block(title, level, verdict, notes, rows)


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
