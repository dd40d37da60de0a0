"""The online-RL view of a run (`preftune train rl`): the headline block and the reward-vs-KL plot.

The headline: the held-out reward at step 0 against the last evaluation (the gain and "rose" / "did
not rise" / "fell"), final KL, completion length, tied groups and the over-optimisation guard's verdict
(eval/overoptimisation.json). The plot: held-out and training reward against the KL to the reference
at the same steps (Gao et al. 2022's view of over-optimisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from preftune.report import shapes
from preftune.report.blocks import Block
from preftune.report.blocks import metric_span as _metric
from preftune.report.fmt import esc, fmt_num, num_span
from preftune.report.plots import PLOT_LIMIT, Series, _note_left_out, _render


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
                                         f"{len(tied)} logged steps; last "
                                         f"{_metric(tied[-1][1], 'train/tied_groups', tied[-1][0])}"
                                         f" at step {tied[-1][0]:g} <small>(groups whose rewards all tie: zero "
                                         "advantage, no learning signal)</small>")))
        if mean > 0.5:
            notes.append(f"Most groups tie (mean share {esc(fmt_num(mean))}): their completions all score the same, "
                         "so they give no gradient. Raise <code>num_generations</code> or the temperature, or use a "
                         "reward with finer grades. <a href='#training'>Curve</a>.")
    trunc = _last_point(series.get("train/truncated"))
    if trunc is not None:
        rows.append(("truncated completions", (f"{_metric(trunc[1], 'train/truncated', trunc[0])} at step "
                                              f"{trunc[0]:g} <small>(share with no EOS "
                                              "within max_new_tokens)</small>")))
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


def aligned_points(x: Series, y: Series, origin: tuple[float, float] | None = None
                   ) -> tuple[list[float], list[float], list[float]]:
    """(steps, x values, y values) at the steps where both series have a finite value (first value of a
    step when it is logged twice). `origin` = (step, x value) adds a point the metrics do not log, e.g.
    step 0's KL of 0 (the RL policy starts as its reference), when y has that step and x does not."""
    xs = {}
    for st, v in zip(x.steps, x.values):
        if math.isfinite(v):
            xs.setdefault(st, v)
    if origin is not None:
        xs.setdefault(origin[0], origin[1])
    out: dict[float, tuple[float, float]] = {}
    for st, v in zip(y.steps, y.values):
        if st in xs and math.isfinite(v):
            out.setdefault(st, (xs[st], v))
    steps = sorted(out)
    return steps, [out[s][0] for s in steps], [out[s][1] for s in steps]


def plot_reward_vs_kl(curves: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
                      xlabel: str = "KL to the reference") -> bytes:
    """Reward (y) against the KL to the reference (x), one line per (label, steps, kl, reward) curve in
    step order, its first and last points labelled with their step: the classic over-optimisation view
    (Gao et al. 2023), where a reward bought with ever more KL shows as a curve that flattens or turns."""
    styles = ("s--", "o-", "^-.", "D:")
    colors = ("#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e")

    def draw(ax) -> None:
        left_out = 0
        for i, (label, steps, kl, reward) in enumerate(curves):
            pts = [(s, x, y) for s, x, y in zip(steps, kl, reward)
                   if all(math.isfinite(v) and abs(v) <= PLOT_LIMIT for v in (s, x, y))]
            left_out += len(steps) - len(pts)
            if not pts:
                continue
            ax.plot([p[1] for p in pts], [p[2] for p in pts], styles[i % len(styles)], color=colors[i % len(colors)],
                    markersize=4, alpha=0.85, label=label)
            for s, x, y in (pts[0], pts[-1]) if len(pts) > 1 else pts[:1]:
                ax.annotate(f"step {s:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=colors[i % len(colors)])
        _note_left_out(ax, left_out)
        ax.set_title("Reward vs KL to the reference")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean reward")
        ax.legend(fontsize=8)

    return _render(draw)
