"""The regression gate: boring-but-important cases a tuned model must not break.

A suite is a JSONL file, one case per line:

    {"id": "limit-1", "prompt": "In at most 10 words, what is rain?",
     "checks": [{"max_words": 10}, {"not_refuses": true}, {"gold_above": 0.5}]}

Each check is a one-key object: contains / not_contains (case-insensitive substring), regex (Python
`re.search`), max_words (whitespace words), valid_json (true, or {"key": NAME} to require a key of a
JSON object; a ```json fence is allowed), refuses / not_refuses (the world's refusal detector), and
gold_above X (the world's gold total > X). A case passes when all its checks pass. The model and the
baseline answer greedily; every case that passed for the baseline and fails for the model is a
regression. Generation is a plain function (list of prompts -> list of texts), so tests can mock it
and still exercise the same gate code.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GenerateFn = Callable[[list], list[str]]
DEFAULT_SUITE = Path(__file__).resolve().parent.parent / "data" / "assets" / "regression_suite.jsonl"



class CheckKind(enum.Enum):
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    REGEX = "regex"
    MAX_WORDS = "max_words"
    VALID_JSON = "valid_json"
    REFUSES = "refuses"
    NOT_REFUSES = "not_refuses"
    GOLD_ABOVE = "gold_above"


@dataclass
class Check:
    kind: CheckKind
    arg: Any

    def __str__(self) -> str:
        return f"{self.kind.value}={json.dumps(self.arg)}"


@dataclass
class Case:
    id: str
    prompt: str | list
    checks: list[Check]
    where: str = ""
    category: str | None = None


@dataclass
class CaseResult:
    id: str
    passed: bool
    failed: list[str] = field(default_factory=list)  # "check: why" per failed check
    response: str = ""


def _is_refusal(text: str) -> bool:
    # the world's detector, so that `refuses` checks and the gold scorer agree on what a refusal is
    from preftune.world.gold import is_refusal

    return is_refusal(text)


def _gold_total(prompt, text: str) -> float:
    from preftune.eval.judges import gold_score_fn

    return float(gold_score_fn()(prompt, text)["total"])


def _json_object(text: str) -> Any:
    s = text.strip()
    m = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", s, re.DOTALL)
    try:
        return json.loads(m.group(1) if m else s)
    except ValueError:
        return None


def run_check(check: Check, prompt, response: str) -> tuple[bool, str]:
    """(passed, why) for one check on one response."""
    k, a = check.kind, check.arg
    if k is CheckKind.CONTAINS:
        return a.lower() in response.lower(), f"does not contain {a!r}"
    if k is CheckKind.NOT_CONTAINS:
        return a.lower() not in response.lower(), f"contains {a!r}"
    if k is CheckKind.REGEX:
        return re.search(a, response) is not None, f"no match for /{a}/"
    if k is CheckKind.MAX_WORDS:
        n = len(response.split())
        return n <= a, f"{n} words > {a}"
    if k is CheckKind.VALID_JSON:
        obj = _json_object(response)
        if obj is None:
            return False, "not valid JSON"
        key = a.get("key") if isinstance(a, dict) else None
        if key is not None and not (isinstance(obj, dict) and key in obj):
            return False, f"JSON without key {key!r}"
        return True, ""
    if k is CheckKind.REFUSES:
        return _is_refusal(response), "did not refuse"
    if k is CheckKind.NOT_REFUSES:
        return not _is_refusal(response), "refused"
    assert k is CheckKind.GOLD_ABOVE
    total = _gold_total(prompt, response)
    return total > a, f"gold {total:.3f} <= {a}"


def _parse_check(obj: Any, where: str) -> Check:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise ValueError(f"{where}: a check is a one-key object like {{\"max_words\": 20}}, got {obj!r}")
    (name, arg), = obj.items()
    try:
        kind = CheckKind(name)
    except ValueError:
        raise ValueError(f"{where}: unknown check {name!r} (use one of "
                         f"{', '.join(k.value for k in CheckKind)})") from None
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    ok = {CheckKind.CONTAINS: isinstance(arg, str) and arg != "",
          CheckKind.NOT_CONTAINS: isinstance(arg, str) and arg != "",
          CheckKind.REGEX: isinstance(arg, str), CheckKind.MAX_WORDS: is_int and arg >= 0,
          CheckKind.VALID_JSON: arg is True or (isinstance(arg, dict) and isinstance(arg.get("key"), str)),
          CheckKind.REFUSES: arg is True, CheckKind.NOT_REFUSES: arg is True,
          CheckKind.GOLD_ABOVE: isinstance(arg, (int, float)) and not isinstance(arg, bool)}[kind]
    if not ok:
        raise ValueError(f"{where}: bad value {arg!r} for check {name!r}")
    if kind is CheckKind.GOLD_ABOVE and not math.isfinite(arg):
        raise ValueError(f"{where}: {name} must be a finite number, got {arg!r}")
    if kind is CheckKind.REGEX:
        try:
            re.compile(arg)
        except re.error as e:
            raise ValueError(f"{where}: invalid regex {arg!r}: {e}") from None
    return Check(kind, arg)


def parse_case(row: Any, where: str) -> Case:
    """One suite row -> Case; ValueError naming FILE:LINE and the field."""
    if not isinstance(row, dict):
        # ValueError, not TypeError: this is user input, which the CLI reports as `preftune: error:`
        raise ValueError(f"{where}: a case must be a JSON object")  # noqa: TRY004
    from preftune.data.prompts import parse_prompt

    prompt = row.get("prompt")
    if prompt is None:
        raise ValueError(f"{where}: prompt: is missing")
    messages = parse_prompt(prompt, where)  # roles and content checked like every record
    prompt = prompt if isinstance(prompt, str) else messages
    checks = row.get("checks")
    if not isinstance(checks, list) or not checks:
        raise ValueError(f"{where}: checks: need a non-empty list of checks")
    parsed = [_parse_check(c, f"{where}: checks[{i}]") for i, c in enumerate(checks)]
    return Case(id=str(row.get("id") or where), prompt=prompt, checks=parsed, where=where,
                category=row.get("category"))


def read_suite(path: str | Path) -> list[Case]:
    """Every case of a suite file (any row format `data.io` reads: JSONL, .gz, ...); ValueError naming
    FILE:LINE for the first bad row (not UTF-8, invalid JSON, a bad check, a duplicate id)."""
    from preftune.data.io import iter_raw

    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: --suite is a folder; give a suite file (JSONL, one case per line)")
    if not p.is_file():
        raise ValueError(f"suite file {p} does not exist")
    rows = list(iter_raw(p))  # the whole file is read first: an unreadable file is named as such
    bad = next((r for r in rows if r.error is not None), None)
    if bad is not None:
        raise ValueError(f"{bad.where}: {bad.error}")
    cases, seen = [], set()
    for raw in rows:
        case = parse_case(raw.row, raw.where)
        if case.id in seen:
            raise ValueError(f"{raw.where}: id: duplicate case id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise ValueError(f"{p}: no cases")
    return cases


def run_suite(cases: Sequence[Case], responses: Sequence[str]) -> list[CaseResult]:
    """Check each case's response (same order as the cases)."""
    if len(cases) != len(responses):
        raise ValueError(f"{len(responses)} responses for {len(cases)} cases")
    out = []
    for case, resp in zip(cases, responses):
        failed = []
        for check in case.checks:
            ok, why = run_check(check, case.prompt, resp)
            if not ok:
                failed.append(f"{check}: {why}")
        out.append(CaseResult(case.id, not failed, failed, resp))
    return out


def regression_gate(cases: Sequence[Case], generate_model: GenerateFn, generate_baseline: GenerateFn) -> dict:
    """Run both on the suite; regressions = cases the baseline passes and the model fails."""
    prompts = [c.prompt for c in cases]
    model_res = run_suite(cases, generate_model(prompts))
    base_res = run_suite(cases, generate_baseline(prompts))
    regressions, fixed = [], []
    for case, m, b in zip(cases, model_res, base_res):
        if b.passed and not m.passed:
            regressions.append({"id": case.id, "prompt": case.prompt, "failed_checks": m.failed,
                                "model_response": m.response, "baseline_response": b.response})
        elif m.passed and not b.passed:
            fixed.append(case.id)
    return {"num_cases": len(cases), "model_passed": sum(r.passed for r in model_res),
            "baseline_passed": sum(r.passed for r in base_res), "num_regressions": len(regressions),
            "regressions": regressions, "fixed": fixed,
            "cases": [{"id": c.id, "model_passed": m.passed, "baseline_passed": b.passed,
                       "model_failed": m.failed, "baseline_failed": b.failed,
                       # stored so that `preftune report` can show both answers of every case
                       "prompt": c.prompt, "category": c.category,
                       "model_response": m.response, "baseline_response": b.response}
                      for c, m, b in zip(cases, model_res, base_res)]}


def greedy_generator(model_name: str, max_new_tokens: int = 128, batch_size: int = 8) -> GenerateFn:
    """A GenerateFn answering greedily (deterministic, so an unchanged model never regresses)."""
    from preftune.eval.generate import generate, load_causal_lm

    model, tok = load_causal_lm(model_name)

    def fn(prompts: list) -> list[str]:
        return generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        do_sample=False, desc=f"regress {model_name}").texts
    return fn
