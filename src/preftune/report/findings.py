"""What the report warns about: damaged files, training pathologies, evaluator warnings.

Each Finding names the section of the page that shows its evidence, so the headline can count them
and each warning can link there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from preftune.report import plots, shapes
from preftune.report.plots import Series
from preftune.report.run import RunData

LOW_ACCURACY = 0.6  # a preference accuracy below this at the end of training or in eval is flagged
# the section that shows the evidence behind a warning from each source
SECTION_OF = {"metrics.jsonl": "training", "run.json": "provenance", "report": "provenance",
              "eval/rm.json": "rm-eval", "eval/policy.json": "win-rate", "eval/regress.json": "regressions",
              "eval/guards.json": "guards", "eval/overoptimisation.json": "guards"}
TIED_GROUPS_WARN = 0.5  # an RL run whose groups tie more often than this (mean share) learns from few of them


@dataclass(frozen=True)
class Finding:
    """One highlighted warning. level: "error" | "warning" | "info"; section: the id it links to."""
    level: str
    source: str
    message: str
    section: str = ""

    def __post_init__(self) -> None:
        if not self.section:
            object.__setattr__(self, "section", SECTION_OF.get(self.source, "other-evals"))


def _mean_var(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0)


def _trend(values: list[float]) -> tuple[float, float]:
    """(mean of the last quarter - mean of the first quarter, its standard error); quarters have at
    least 2 points. Comparing windows rather than endpoints keeps one noisy step from deciding."""
    k = max(2, len(values) // 4)
    m0, v0 = _mean_var(values[:k])
    m1, v1 = _mean_var(values[-k:])
    return m1 - m0, math.sqrt(v0 / k + v1 / k)


def _aligned(a: Series, b: Series) -> tuple[list[float], list[float]]:
    bmap = {x: y for x, y in zip(b.steps, b.values) if math.isfinite(y)}
    pairs = [(y, bmap[x]) for x, y in zip(a.steps, a.values) if x in bmap and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def chosen_falls_while_margin_grows(chosen: list[float], margin: list[float]) -> bool:
    """True when the chosen log-prob falls and the reward margin grows, both beyond 2 standard
    errors (and the chosen drop beyond 1% of its starting size, to ignore numerically tiny drift).

    This is the DPO failure where the margin is won by pushing both completions down, rejected
    faster: the policy moves probability mass off the data it was told to prefer.
    chosen, margin: aligned per-step values, length N >= 4.
    """
    if len(chosen) < 4 or len(chosen) != len(margin):
        return False
    d_chosen, se_chosen = _trend(chosen)
    d_margin, se_margin = _trend(margin)
    start = abs(sum(chosen[:2]) / 2)
    return d_chosen < -max(2 * se_chosen, 0.01 * start) and d_margin > 2 * se_margin and d_margin > 0


def _pick(series: dict[str, Series], *names: str) -> Series | None:
    return next((series[n] for n in names if n in series), None)


def _metric_findings(series: dict[str, Series], trainer_flagged: bool) -> list[Finding]:
    out = []
    chosen = _pick(series, "train/logps/chosen", "train/rewards/chosen")
    margin = _pick(series, "train/rewards/margin", "train/margin")
    if chosen is not None and margin is not None and not trainer_flagged:
        c, m = _aligned(chosen, margin)
        if chosen_falls_while_margin_grows(c, m):
            out.append(Finding("warning", "metrics.jsonl", (
                f"{chosen.name} falls ({c[0]:.4g} -> {c[-1]:.4g}) while {margin.name} grows "
                f"({m[0]:.4g} -> {m[-1]:.4g}): the margin is won by lowering the chosen completions' "
                "likelihood too. Consider a larger beta, an SFT term on chosen (RPO), or fewer epochs.")))
    for s in series.values():
        if plots.split_metric(s.name)[1] == "loss":
            bad = [x for x, y in zip(s.steps, s.values) if not math.isfinite(y)]
            if bad:
                out.append(Finding("error", "metrics.jsonl", f"{s.name} is NaN/inf at step {bad[0]:g}"
                                   + (f" and {len(bad) - 1} later steps" if len(bad) > 1 else "")))
    acc = _pick(series, "eval/rewards/accuracy", "eval/accuracy", "train/rewards/accuracy", "train/accuracy")
    if acc is not None:
        finite = [v for v in acc.values if math.isfinite(v)]
        tail = finite[-max(1, len(finite) // 4):]
        if tail and sum(tail) / len(tail) < LOW_ACCURACY:
            out.append(Finding("warning", "metrics.jsonl", f"{acc.name} ends at {sum(tail) / len(tail):.3f} "
                               f"(mean of the last {len(tail)} logged steps), below {LOW_ACCURACY}"))
    tied = series.get("train/tied_groups")
    finite_tied = [v for v in tied.values if math.isfinite(v)] if tied else []
    if finite_tied and sum(finite_tied) / len(finite_tied) > TIED_GROUPS_WARN:
        out.append(Finding("warning", "metrics.jsonl", (
            f"train/tied_groups averages {sum(finite_tied) / len(finite_tied):.3g} over {len(finite_tied)} logged "
            f"steps (above {TIED_GROUPS_WARN}): most groups' completions score the same, so their advantages are "
            "zero and they teach nothing")))
    return out


def _walk_counts(obj: Any, prefix: str = "") -> list[tuple[str, str, int, Any]]:
    """(path, key, count, sibling row count) for every num_truncated/num_dropped in nested dicts."""
    out = []
    if isinstance(obj, dict):
        total = next((obj[k] for k in ("num_rows", "num_pairs", "num_examples") if k in obj), None)
        for k, v in obj.items():
            if k in ("num_truncated", "num_dropped") and isinstance(v, int) and not isinstance(v, bool):
                out.append((prefix, k, v, total))
            elif isinstance(v, dict):
                out.extend(_walk_counts(v, f"{prefix}{k}."))
    return out


def _trainer_warnings(info: dict) -> list[Finding]:
    """The `warnings` list the trainers write into run.json ({step, kind, message} or sentences)."""
    listed = info.get("warnings")
    out = []
    for w in listed if isinstance(listed, list) else []:
        w = w if isinstance(w, dict) else {"message": str(w)}
        step = f"step {w['step']}: " if shapes.is_num(w.get("step")) else ""
        out.append(Finding("warning", "run.json", f"{step}{shapes.text_of(w.get('message', ''))}", "training"))
    return out


def _eval_findings(run: RunData) -> list[Finding]:
    found = []
    rm = run.evals.get("rm")
    acc = shapes.num(rm, "accuracy")
    if acc is not None and acc < LOW_ACCURACY:
        found.append(Finding("warning", "eval/rm.json", f"reward-model accuracy {acc:.3f} is below {LOW_ACCURACY}"))
    pol = run.evals.get("policy")
    ci = shapes.interval(pol, "win_rate_ci95", "win_rate_ci")
    if ci is not None and ci[1] < 0.5:
        found.append(Finding("warning", "eval/policy.json", f"the model loses to the baseline: win-rate 95% "
                             f"interval [{ci[0]:.3f}, {ci[1]:.3f}] is below 0.5"))
    regressed = [c for c in shapes.regress_cases(run.evals.get("regress")) if c["regressed"]]
    if regressed:
        found.append(Finding("error", "eval/regress.json", f"{len(regressed)} regression case(s) passed "
                             f"with the baseline and fail now: {', '.join(c['id'] for c in regressed[:10])}"))
    return found


def find_warnings(run: RunData, series: dict[str, Series]) -> list[Finding]:
    """All warnings for the top of the report, errors first."""
    found = [Finding("warning", "report", p, "warnings") for p in run.problems]
    for name, content in run.evals.items():
        found.extend(eval_warnings(content, f"eval/{name}.json"))
    trainer = _trainer_warnings(run.info)
    flagged = any(isinstance(w, dict) and w.get("kind") == "chosen_logps_falling"
                  for w in run.info.get("warnings") or [] if isinstance(run.info.get("warnings"), list))
    found.extend(trainer + _metric_findings(series, flagged))
    for where, key, n, total in _walk_counts(run.info):
        if n > 0:
            share = f" of {total} ({100 * n / total:.1f}%)" if isinstance(total, int) and total > 0 else ""
            what = "truncated to fit max_length" if key == "num_truncated" else "dropped"
            found.append(Finding("warning", "run.json", f"{where}{key}: {n} rows{share} {what}"))
    found.extend(_eval_findings(run))
    rank = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda f: rank[f.level])


def eval_warnings(obj: Any, source: str, depth: int = 0) -> list[Finding]:
    """Every `warnings` list inside an evaluator's JSON (guards nest them per report, e.g.
    policy.json's length_bias.warnings); items are sentences or {level, message} dicts."""
    out: list[Finding] = []
    if not isinstance(obj, dict) or depth > 3:
        return out
    listed = obj.get("warnings")
    for w in listed if isinstance(listed, list) else []:
        w = w if isinstance(w, dict) else {"message": str(w)}
        level = str(w.get("level", "warning")).lower()
        level = {"warn": "warning", "critical": "error"}.get(level, level)
        out.append(Finding(level if level in ("error", "warning", "info") else "warning", source,
                           shapes.text_of(w.get("message", ""))))
    for k, v in obj.items():
        if k not in ("warnings", "samples") and isinstance(v, dict):
            out.extend(eval_warnings(v, source, depth + 1))
    return out
