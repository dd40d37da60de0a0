"""Rewards for online RL: a spec of weighted components, each scoring every completion of a batch.

    gold                 the verifiable world's gold scorer (preftune.world.gold_score(...)["total"])
    rm:RUN               a trained reward model or ensemble (preftune.models.scoring.load_scorer);
                         with uncertainty_coef > 0 the ensemble's std is subtracted (Coste et al. 2024)
    py:module:function   a user function called as function(prompts=[...], completions=[...], **columns)
                         with every other column of the prompt rows as a list; it returns one float or
                         None (skip: the completion takes no part in its group's statistics) per completion
    judge:SPEC           a pairwise judge (`eval policy --judge` specs) for online_dpo: built by the CLI
                         (the judge lives in eval/, above train/) and passed to train_rl

Weights follow a last `:w` (`gold:1,rm:runs/rm:0.5`). Every component is logged on its own
(`train/rewards/<name>`), the weighted sum is the reward. parse_reward_spec is torch-free (configs
check a spec when they load); the scorers load their models only when built.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = {"gold": 0, "rm": 1, "py": 2, "judge": -1}  # kind -> number of ':'-separated arguments (-1: the rest)


@dataclass(frozen=True)
class RewardComponent:
    kind: str      # gold | rm | py | judge
    arg: str       # RUN for rm, module:function for py, the judge spec for judge, "" for gold
    weight: float

    @property
    def name(self) -> str:
        """The metric name: gold, rm, rm_2 ... (see RewardMix)."""
        return self.kind if self.kind != "py" else self.arg.rsplit(":", 1)[-1]


def parse_reward_spec(spec: str) -> list[RewardComponent]:
    """'gold:1,rm:runs/rm:0.5' -> components; ValueError naming the bad part."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError("reward: empty spec; e.g. gold, rm:RUN, py:module:function, gold:1,rm:RUN:0.5")
    out = []
    for part in parts:
        kind, *rest = part.split(":")
        if kind not in KINDS:
            raise ValueError(f"reward: unknown component {part!r}; one of gold, rm:RUN, py:module:function, judge:SPEC")
        need = KINDS[kind]
        weight = 1.0
        if kind == "judge":
            if not rest:
                raise ValueError(f"reward: {part!r} needs a judge spec (judge:gold, judge:llm:MODEL, judge:http://...)")
            out.append(RewardComponent(kind, ":".join(rest), 1.0))
            continue
        if len(rest) == need + 1:
            try:
                weight = float(rest[-1])
            except ValueError:
                raise ValueError(f"reward: {part!r}: the weight {rest[-1]!r} is not a number") from None
            rest = rest[:-1]
        if len(rest) != need or any(not r for r in rest):
            form = {"gold": "gold[:w]", "rm": "rm:RUN[:w]", "py": "py:module:function[:w]"}[kind]
            raise ValueError(f"reward: {part!r} does not read as {form}")
        if not math.isfinite(weight):
            raise ValueError(f"reward: {part!r}: the weight must be finite")
        out.append(RewardComponent(kind, ":".join(rest), weight))
    judges = [c for c in out if c.kind == "judge"]
    if judges and len(out) > 1:
        raise ValueError("reward: a judge: component compares two completions and mixes with nothing else")
    return out


Scorer = Callable[[Sequence[Any], Sequence[str], dict[str, list]], list[float]]


def _gold() -> Scorer:
    from preftune.world.gold import gold_score

    def score(prompts, completions, columns):
        return [float(gold_score(p, c)["total"]) for p, c in zip(prompts, completions)]
    return score


def _rm(run: str, uncertainty_coef: float) -> tuple[Scorer, Any]:
    from preftune.models.scoring import load_scorer

    scorer = load_scorer(run)

    def score(prompts, completions, columns):
        out = scorer.score(list(prompts), list(completions))
        reward = out["reward"]
        if uncertainty_coef and out["std"] is not None:
            reward = reward - uncertainty_coef * out["std"]
        return [float(r) for r in reward]
    return score, scorer


def _py(target: str) -> Scorer:
    module_name, fn_name = target.split(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward py:{target}: cannot import it ({e})") from None
    if not callable(fn):
        raise ValueError(f"reward py:{target} is not a function")  # noqa: TRY004 (user input)

    def score(prompts, completions, columns):
        got = fn(prompts=list(prompts), completions=list(completions), **columns)
        if not isinstance(got, (list, tuple)) or len(got) != len(completions):
            n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
            raise ValueError(f"reward py:{target} returned {n} for {len(completions)} completions; it must return "
                             "one float (or None to skip) per completion")
        out = []
        for i, v in enumerate(got):
            if v is None:
                out.append(math.nan)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
            else:
                raise ValueError(f"reward py:{target} returned {v!r} for completion {i}: need a finite float or None")
        return out
    return score


class RewardMix:
    """The weighted reward of a spec. score(...) -> (reward (N,) list, {component name: (N,) list}); a
    component's NaN (a py reward's None) makes the completion's reward NaN (skipped by the advantages)."""

    def __init__(self, spec: str, uncertainty_coef: float = 0.0):
        self.components = parse_reward_spec(spec)
        if any(c.kind == "judge" for c in self.components):
            raise ValueError("reward: judge: components are pairwise (online_dpo); pass the judge to train_rl")
        self.names, self.scorers, self.models = [], [], []
        for c in self.components:
            name = c.name if c.name not in self.names else f"{c.name}_{len(self.names) + 1}"
            self.names.append(name)
            if c.kind == "gold":
                self.scorers.append(_gold())
            elif c.kind == "rm":
                fn, model = _rm(c.arg, uncertainty_coef)
                self.scorers.append(fn)
                self.models.append(model)
            else:
                self.scorers.append(_py(c.arg))

    def score(self, prompts: Sequence[Any], completions: Sequence[str],
              columns: dict[str, list] | None = None) -> tuple[list[float], dict[str, list[float]]]:
        columns = columns or {}
        parts = {n: fn(prompts, completions, columns) for n, fn in zip(self.names, self.scorers)}
        total = [sum(c.weight * parts[n][i] for c, n in zip(self.components, self.names))
                 for i in range(len(completions))]
        return total, parts
