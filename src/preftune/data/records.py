"""The data record (README.md, "The data format"), its normalisation and its validation.

Three kinds of row:
- pair:     prompt, chosen, rejected (+ rubric metadata)
- unpaired: prompt, completion, label (true = desirable), for KTO-style losses
- rated:    prompt, completions (list), scores (list of numbers), to be turned into pairs

`prompt` is a string or a list of chat messages; a response is a string, one message, or a list
of messages. After normalisation every conversation is a list of `{"role", "content"}` dicts:
a string prompt becomes one user message, a string response one assistant message.

`validate_row` returns *every* problem of a row (used by `preftune data check`);
`record_from_dict` raises a ValueError naming the first one (used by readers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from preftune.data import agent

Message = dict  # {"role": str, "content": str}
Conversation = list  # list[Message]

ROLES = ("system", "user", "assistant", "tool")
META_FIELDS = ("id", "rationale", "annotator", "confidence", "close", "category", "attributes",
               "source", "margin")
VERDICTS = ("chosen", "rejected", "tie")
# Multi-labelled data (DESIGN.md section 2): optional keys kept in `extra`, checked here.
# `shown_first`: which response the labeller saw first; `gold`: the known answer of a honeypot item.
SHOWN_FIRST = ("chosen", "rejected")


@dataclass
class Problem:
    """One validation problem: the field it concerns and a message. `nonfinite` marks a number field
    holding NaN / Infinity (as a number, or as text like "nan"): `convert` stops on those."""
    field: str
    message: str
    nonfinite: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class _Meta:
    id: str | None = None
    rationale: str | None = None       # why chosen won, in words
    annotator: str | None = None       # who labelled the row
    confidence: float | None = None    # labeller's confidence that chosen is better, in [0, 1]
    close: bool | None = None          # the two responses were judged close / a near tie
    category: str | None = None
    attributes: dict = field(default_factory=dict)  # dimension -> "chosen" | "rejected" | "tie"
    source: str | None = None
    margin: float | None = None        # how much better chosen is (e.g. score difference of rated rows)
    tools: list = field(default_factory=list)       # agent rows: JSON-schema function definitions (data/agent.py)
    extra: dict = field(default_factory=dict)       # any other keys, kept and written back


@dataclass
class PairRecord(_Meta):
    prompt: Conversation = field(default_factory=list)
    chosen: Conversation = field(default_factory=list)
    rejected: Conversation = field(default_factory=list)
    kind: str = "pair"

    def to_dict(self) -> dict:
        return _to_dict(self, ("prompt", "chosen", "rejected"))


@dataclass
class UnpairedRecord(_Meta):
    prompt: Conversation = field(default_factory=list)
    completion: Conversation = field(default_factory=list)
    label: bool = True
    kind: str = "unpaired"

    def to_dict(self) -> dict:
        return _to_dict(self, ("prompt", "completion", "label"))


@dataclass
class RatedRecord(_Meta):
    prompt: Conversation = field(default_factory=list)
    completions: list = field(default_factory=list)  # list[Conversation]
    scores: list = field(default_factory=list)       # list[float], same length
    kind: str = "rated"

    def to_dict(self) -> dict:
        return _to_dict(self, ("prompt", "completions", "scores"))

    def to_pairs(self, min_margin: float = 0.0) -> list[PairRecord]:
        """Every pair of completions whose scores differ by more than `min_margin`, best as chosen,
        with `margin` = score difference. Equal scores give no pair (a tie is not a preference)."""
        pairs = []
        order = sorted(range(len(self.completions)), key=lambda i: -self.scores[i])
        for a_pos, a in enumerate(order):
            for b in order[a_pos + 1:]:
                margin = float(self.scores[a]) - float(self.scores[b])
                if margin > min_margin:
                    meta = {k: getattr(self, k) for k in META_FIELDS if k not in ("id", "margin")}
                    pairs.append(PairRecord(
                        id=f"{self.id}:{a}>{b}" if self.id is not None else None, margin=margin,
                        prompt=self.prompt, chosen=self.completions[a], rejected=self.completions[b],
                        tools=self.tools, extra=dict(self.extra), **meta))
        return pairs


Record = Union[PairRecord, UnpairedRecord, RatedRecord]  # noqa: UP007 (a runtime alias on Python 3.10)


def _to_dict(rec: _Meta, core: tuple[str, ...]) -> dict:
    d = asdict(rec)
    extra = d.pop("extra")
    d.pop("kind")
    out: dict[str, Any] = {}
    if d.get("id") is not None:
        out["id"] = d["id"]
    for k in core:
        out[k] = d[k]
    if d.get("tools"):
        out["tools"] = d["tools"]
    for k in META_FIELDS:
        if k == "id":
            continue
        v = d.get(k)
        if v is None or (k == "attributes" and not v):
            continue
        out[k] = v
    out.update(extra)
    return out


def row_kind(row: dict) -> str | None:
    """'pair', 'unpaired' or 'rated' by the keys present, or None when it is none of them."""
    if "chosen" in row or "rejected" in row:
        return "pair"
    if "completion" in row or "label" in row:
        return "unpaired"
    if "completions" in row or "scores" in row:
        return "rated"
    return None


def _conversation(value: Any, name: str, default_role: str, problems: list[Problem]) -> Conversation:
    """Normalise a string / message / list of messages; append problems instead of raising."""
    if isinstance(value, str):
        if not value.strip():
            problems.append(Problem(name, "is empty"))
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        problems.append(Problem(name, f"must be a string or a list of messages, got {type(value).__name__}"))
        return []
    if not value:
        problems.append(Problem(name, "is an empty list"))
        return []
    msgs = []
    for i, m in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(m, dict):
            problems.append(Problem(where, f"must be a message object, got {type(m).__name__}"))
            continue
        role, content = m.get("role"), m.get("content")
        extras = agent.message_extras(m, role, where, problems)
        if content is None and extras.get("tool_calls"):
            content = ""  # an assistant turn that only calls tools has no text
        if role is None:
            problems.append(Problem(f"{where}.role", f"is missing (expected one of {', '.join(ROLES)})"))
        elif role not in ROLES:
            problems.append(Problem(f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})"))
        if not isinstance(content, str):
            problems.append(Problem(f"{where}.content", "must be a string"
                                    + (" (missing)" if content is None else f", got {type(content).__name__}")))
            content = "" if content is None else str(content)
        for k, v in m.items():  # other message keys are not kept, but a copy of the raw row may be
            if k not in ("role", "content"):
                problems.extend(Problem(p, f"must be a finite number, got {show_number(x)}", nonfinite=True)
                                for p, x in nonfinite_paths(v, f"{where}.{k}"))
        msgs.append({"role": role, "content": content, **extras})
    if msgs and all(not m["content"].strip() and not m.get("tool_calls") for m in msgs):
        problems.append(Problem(name, "is empty"))
    return msgs


def show_number(v: Any) -> str:
    """A number as JSON spells it (NaN, Infinity, -Infinity for the values JSON cannot hold)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 1024:
        return f"an integer of {v.bit_length()} bits (beyond the float range)"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def finite(v: Any) -> float | None:
    """`v` as a float when it is a finite int/float (not a bool), else None. Python's json parses
    NaN, Infinity and 1e999 (as inf), and ints beyond the float range overflow: all give None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _number(row: dict, key: str, problems: list[Problem], what: str) -> float | None:
    """The optional number `row[key]` as a float; a problem (and None) when it is not a finite number."""
    v = row.get(key)
    if v is None:
        return None
    f = finite(v)
    if f is None:
        problems.append(Problem(key, f"must be {what}, got {show_number(v)}", nonfinite=_nonfinite_value(v)))
    return f


def _nonfinite_value(v: Any) -> bool:
    """NaN / Infinity as a number (or an int beyond the float range), or as text ("nan", "-Infinity")."""
    if isinstance(v, str):
        try:
            return not math.isfinite(float(v))
        except ValueError:
            return False
    return isinstance(v, (int, float)) and not isinstance(v, bool) and finite(v) is None


def nonfinite_paths(value: Any, path: str) -> list[tuple[str, Any]]:
    """(path, value) of every non-finite number (NaN, +-Infinity, an int beyond the float range)
    inside a JSON value, e.g. ("weights[1]", nan) or ("meta.score", inf)."""
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in nonfinite_paths(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in nonfinite_paths(v, f"{path}[{i}]")]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and finite(value) is None:
        return [(path, value)]
    return []


def _check_meta(row: dict, problems: list[Problem]) -> dict:
    meta: dict[str, Any] = {}
    for k in ("id", "rationale", "annotator", "category", "source"):
        v = row.get(k)
        if v is not None and not isinstance(v, (str, int)):
            problems.append(Problem(k, f"must be a string, got {type(v).__name__}"))
        meta[k] = None if v is None else str(v)
    conf = _number(row, "confidence", problems, "a finite number in [0, 1]")
    if conf is not None and not 0.0 <= conf <= 1.0:
        problems.append(Problem("confidence", f"must be in [0, 1], got {conf:g}"))
    meta["confidence"] = conf
    close = row.get("close")
    if close is not None and not isinstance(close, bool):
        problems.append(Problem("close", f"must be true or false, got {close!r}"))
        close = None
    meta["close"] = close
    meta["margin"] = _number(row, "margin", problems, "a finite number")
    attrs = row.get("attributes")
    if attrs is None:
        attrs = {}
    elif not isinstance(attrs, dict):
        problems.append(Problem("attributes", f"must be an object of dimension -> verdict, got {type(attrs).__name__}"))
        attrs = {}
    else:
        for dim, verdict in attrs.items():
            if verdict not in VERDICTS:
                problems.append(Problem(f"attributes.{dim}",
                                        f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}"))
    meta["attributes"] = dict(attrs)
    meta["tools"] = agent.normalise_tools(row.get("tools"), problems)
    return meta


_CORE = {"pair": ("prompt", "chosen", "rejected"), "unpaired": ("prompt", "completion", "label"),
         "rated": ("prompt", "completions", "scores")}


def parse_row(row: Any) -> tuple[Record | None, list[Problem]]:
    """Normalise one raw row. Returns (record or None, every problem found)."""
    problems: list[Problem] = []
    if not isinstance(row, dict):
        return None, [Problem("row", f"must be a JSON object, got {type(row).__name__}")]
    kind = row_kind(row)
    if kind is None:
        return None, [Problem("row", "is not a pair (prompt/chosen/rejected), an unpaired row "
                                     "(prompt/completion/label) or a rated row (prompt/completions/scores); "
                                     f"keys: {', '.join(sorted(row)) or 'none'}")]
    for k in _CORE[kind]:
        if k not in row or row[k] is None:
            problems.append(Problem(k, "is missing"))
    meta = _check_meta(row, problems)
    extra = {k: v for k, v in row.items() if k not in META_FIELDS and k not in _CORE[kind] and k != "tools"}
    # Any other key is kept and written back, so it must be valid JSON too (and a weight or score
    # kept there may be read by a loss): no NaN or Infinity anywhere in it.
    for k, v in extra.items():
        problems.extend(Problem(where, f"must be a finite number, got {show_number(x)}", nonfinite=True)
                        for where, x in nonfinite_paths(v, k))
    _check_labelling(extra, problems)
    prompt = _conversation(row["prompt"], "prompt", "user", problems) if row.get("prompt") is not None else []
    rec: Record
    if kind == "pair":
        chosen = _conversation(row["chosen"], "chosen", "assistant", problems) if row.get("chosen") is not None else []
        rejected = (_conversation(row["rejected"], "rejected", "assistant", problems)
                    if row.get("rejected") is not None else [])
        if chosen and chosen == rejected:
            problems.append(Problem("rejected", "is identical to chosen"))
        rec = PairRecord(prompt=prompt, chosen=chosen, rejected=rejected, extra=extra, **meta)
    elif kind == "unpaired":
        completion = (_conversation(row["completion"], "completion", "assistant", problems)
                      if row.get("completion") is not None else [])
        label = row.get("label")
        if label is not None and not isinstance(label, bool):
            problems.append(Problem("label", f"must be true or false, got {label!r}"))
        rec = UnpairedRecord(prompt=prompt, completion=completion, label=bool(label), extra=extra, **meta)
    else:
        comps, scores = row.get("completions"), row.get("scores")
        convs = []
        if comps is not None and (not isinstance(comps, list) or len(comps) < 2):
            problems.append(Problem("completions", "must be a list of at least 2 responses"))
        elif comps is not None:
            convs = [_conversation(c, f"completions[{i}]", "assistant", problems) for i, c in enumerate(comps)]
        if scores is not None:
            scores = _scores(scores, comps, problems)
        rec = RatedRecord(prompt=prompt, completions=convs, scores=list(scores or []), extra=extra, **meta)
    _check_trajectories(rec, problems)
    return (rec if not problems else None), problems


def _check_labelling(extra: dict, problems: list[Problem]) -> None:
    """`shown_first` and `gold` (kept in `extra`) hold one of their allowed words when present."""
    for key, allowed in (("shown_first", SHOWN_FIRST), ("gold", VERDICTS)):
        v = extra.get(key)
        if v is not None and v not in allowed:
            problems.append(Problem(key, f"must be one of {', '.join(allowed)}, got {show_number(v)}"))


def _check_trajectories(rec: Record, problems: list[Problem]) -> None:
    """Tool calls and results across prompt + each response (data/agent.py); a problem of the prompt
    is reported once, not once per response."""
    names = {"pair": ("chosen", "rejected"), "unpaired": ("completion",)}.get(rec.kind)
    responses = ([(n, getattr(rec, n)) for n in names] if names is not None
                 else [(f"completions[{i}]", c) for i, c in enumerate(rec.completions)])
    if not rec.tools and not any(agent.is_agent_conversation(c) for c in [rec.prompt] + [c for _, c in responses]):
        return
    found: list[Problem] = []
    for name, conv in responses:
        agent.check_trajectory([("prompt", rec.prompt), (name, conv)], rec.tools, found)
    seen = set()
    for p in found:
        if (p.field, p.message) not in seen:
            seen.add((p.field, p.message))
            problems.append(p)


def _scores(scores: Any, comps: Any, problems: list[Problem]) -> list | None:
    """The scores of a rated row as floats; problems for a non-list, a non-number, a non-finite
    number (a NaN score would sort anywhere and make any completion the winner) or a count mismatch."""
    if not isinstance(scores, list):
        problems.append(Problem("scores", "must be a list of numbers"))
        return None
    ok = True
    for i, s in enumerate(scores):
        if finite(s) is None:
            what = "a finite number" if isinstance(s, (int, float)) and not isinstance(s, bool) else "a number"
            problems.append(Problem(f"scores[{i}]", f"must be {what}, got {show_number(s)}",
                                    nonfinite=_nonfinite_value(s)))
            ok = False
    if isinstance(comps, list) and len(scores) != len(comps):
        problems.append(Problem("scores", f"has {len(scores)} entries for {len(comps)} completions"))
    return list(scores) if ok else None


def parse_response_row(row: Any) -> tuple[str | None, list[Problem]]:
    """Validate a row whose responses are to be scored (`preftune score`), with the checks of
    `parse_row`: a pair, a rated row (`scores` optional: scoring is what adds them), or one response
    as `completion` (`label` optional) or `response`. Returns ("pair" | "single" | "rated" | None,
    every problem)."""
    if not isinstance(row, dict):
        return None, [Problem("row", f"must be a JSON object, got {type(row).__name__}")]
    view = dict(row)
    renamed = "response" in view and not {"completion", "chosen", "rejected", "completions"} & set(view)
    if renamed:
        view["completion"] = view.pop("response")
    kind = row_kind(view)
    if kind is None:
        return None, [Problem("row", "has no response to score (expected chosen/rejected, completion, response "
                                     f"or completions); keys: {', '.join(sorted(row)) or 'none'}")]
    if kind == "unpaired":
        view.setdefault("label", True)
    if kind == "rated" and "scores" not in view and isinstance(view.get("completions"), list):
        view["scores"] = [0] * len(view["completions"])
    problems = parse_row(view)[1]
    if renamed:
        problems = [Problem("response" + p.field[len("completion"):], p.message) if p.field.startswith("completion")
                    else p for p in problems]
    return {"pair": "pair", "unpaired": "single", "rated": "rated"}[kind], problems


def validate_row(row: Any) -> list[Problem]:
    """Every problem of one raw row (empty list = valid)."""
    return parse_row(row)[1]


def record_from_dict(row: Any) -> Record:
    """Normalise one raw row into a record; ValueError naming the field on the first problem."""
    rec, problems = parse_row(row)
    if problems:
        raise ValueError("; ".join(str(p) for p in problems))
    assert rec is not None
    return rec


def render_text(conv: Conversation) -> str:
    """Plain-text view of a conversation (for hashing, statistics and encoders without a chat template)."""
    if len(conv) == 1 and conv[0]["role"] in ("user", "assistant"):
        return agent.message_text(conv[0])
    return "\n".join(f"{m['role']}: {agent.message_text(m)}" for m in conv)
