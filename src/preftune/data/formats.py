"""One function per source format: a raw row (dict) -> preftune row dicts, or `SkipRow(reason)`.

Each converter returns `(rows, notes)`: the rows are plain dicts in the record format of
preftune.data.records (README.md, "The data format"; validated afterwards by `preftune.data.convert`),
the notes name anything of the input row that produced no output (two tied completions of a rated row, say),
so nothing is dropped silently. A row that cannot be used at all raises `SkipRow` with the reason.

Messages of every format are normalised to `{"role", "content"}` with the roles of records.ROLES (plus the
tool-call keys of data/agent.py, via data/formats_agent.py)."""

from __future__ import annotations

import math
import re
from typing import Any

from preftune.data import formats_agent
from preftune.data.records import META_FIELDS, finite, parse_row, show_number

Rows = tuple[list[dict], list[str]]

# Roles used by ShareGPT, OpenAI and the rest, mapped onto records.ROLES. Unknown roles are kept
# as they are so that validation names them instead of silently renaming them.
_ROLE = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "model": "assistant", "bot": "assistant", "chatgpt": "assistant", "function_call": "assistant",
         "system": "system", "developer": "system", "tool": "tool", "function": "tool",
         "observation": "tool", "ipython": "tool"}
# Keys a passthrough must not carry over: they would change what kind of row the output is.
_STRUCTURAL = ("prompt", "chosen", "rejected", "completion", "label", "completions", "scores")
_RESPONSE_ROLES = ("assistant", "tool")


class SkipRow(ValueError):
    """This input row gives no record; the message is the reason shown to the user."""


# ----------------------------------------------------------------------------- helpers

def _require(row: dict, *keys: str) -> None:
    missing = [k for k in keys if row.get(k) is None]
    if missing:
        raise SkipRow(f"missing field(s): {', '.join(missing)}")


def _passthrough(row: dict, consumed: tuple[str, ...]) -> dict:
    """Every key of the source row this format does not consume: metadata and extras are kept."""
    return {k: v for k, v in row.items() if k not in consumed and k not in _STRUCTURAL}


def _text(content: Any, where: str) -> str:
    """Message content as text; OpenAI-style lists of parts are joined when all parts are text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    if content is None:
        raise SkipRow(f"{where}: message has no text content (and no tool calls)")
    raise SkipRow(f"{where}: message content must be text, got {type(content).__name__}")


def message(m: Any, where: str) -> dict:
    """One message from {"role","content"} or ShareGPT's {"from","value"}."""
    if not isinstance(m, dict):
        raise SkipRow(f"{where}: must be a message object, got {type(m).__name__}")
    role = m.get("role", m.get("from"))
    content = m["content"] if "content" in m else m.get("value")
    role = _ROLE.get(str(role).lower(), role) if role is not None else None
    if formats_agent.is_agent_message(m):  # tool calls and results keep their ids (data/formats_agent.py)
        calls = m.get("tool_calls") or m.get("function_call")
        return formats_agent.agent_message(m, role, "" if content is None and calls else _text(content, where))
    return {"role": role, "content": _text(content, where)}


def messages(value: Any, where: str, default_role: str) -> list[dict]:
    """A string, one message or a list of messages, as a list of messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict):
        return [message(value, where)]
    if isinstance(value, list):
        return [message(m, f"{where}[{i}]") for i, m in enumerate(value)]
    raise SkipRow(f"{where}: must be a string or a list of messages, got {type(value).__name__}")


def split_shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen_response, rejected_response) of two full conversations that share all turns
    but their final assistant turn(s). SkipRow when the histories differ earlier."""
    common = 0
    while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
        common += 1
    # Back up to the end of the last user/system turn: a response (assistant turns, with any tool
    # results between them) starts after the last user turn.
    n = common
    while n > 0 and chosen[n - 1]["role"] in _RESPONSE_ROLES:
        n -= 1
    tails = (chosen[n:], rejected[n:])
    for name, tail in zip(("chosen", "rejected"), tails):
        if not tail:
            raise SkipRow(f"{name} has no final assistant turn")
        if any(m["role"] not in _RESPONSE_ROLES for m in tail):
            raise SkipRow(f"chosen and rejected histories differ before the last turn "
                          f"(first difference at turn {common + 1})")
    if n == 0:
        raise SkipRow("chosen and rejected share no prompt turn")
    return chosen[:n], tails[0], tails[1]


class NonFiniteNumber(ValueError):
    """A number field holds NaN or Infinity (as a number or as text such as "nan" or "inf"). Not a
    reason to skip one row: such values mean the source is broken, so the conversion stops."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = problems  # (field, message)

    @classmethod
    def of(cls, field: str, value: Any) -> NonFiniteNumber:
        shown = repr(value) if isinstance(value, str) else show_number(value)
        return cls([(field, f"must be a finite number, got {shown}")])


def _number(v: Any, field: str) -> float | None:
    """A finite number from an int/float or a numeric string ("4"); None for text that is no number
    ("N/A"). NonFiniteNumber for NaN / Infinity, as numbers or as text ("nan", "-inf")."""
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        if not math.isfinite(f):
            raise NonFiniteNumber.of(field, v)
        v = f
    if isinstance(v, (int, float)):
        if finite(v) is None:
            raise NonFiniteNumber.of(field, v)
        return float(v)
    return None


def rated_pairs(prompt: Any, completions: list[Any], scores: list[float], base: dict, row_id: str,
                per_completion: list[dict] | None = None) -> Rows:
    """Every pair of completions with different scores, best as chosen, margin = score difference.

    The order and ids follow `RatedRecord.to_pairs` (sorted by score, id `ID:a>b`); tied couples
    produce no pair and are named in one note. `per_completion[i]` holds extra keys for completion
    i (its model name, aspect ratings), emitted as `chosen_*` / `rejected_*` and as `attributes`."""
    order = sorted(range(len(completions)), key=lambda i: -scores[i])
    rows, ties = [], []
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1:]:
            margin = scores[a] - scores[b]
            if margin <= 0:
                ties.append(f"{a}={b} ({scores[a]:g})")
                continue
            out = {**base, "id": f"{row_id}:{a}>{b}", "prompt": prompt, "chosen": completions[a],
                   "rejected": completions[b], "margin": margin}
            if per_completion:
                out.update(_compare_completions(per_completion[a], per_completion[b], base))
            rows.append(out)
    notes = [f"tied completions give no pair: {', '.join(ties)}"] if ties else []
    return rows, notes


def _compare_completions(ca: dict, cb: dict, base: dict) -> dict:
    out: dict[str, Any] = {}
    if ca.get("model") is not None or cb.get("model") is not None:
        out["chosen_model"], out["rejected_model"] = ca.get("model"), cb.get("model")
    ra, rb = ca.get("ratings", {}), cb.get("ratings", {})
    attrs = dict(base.get("attributes") or {})
    for aspect in ra:
        if aspect in rb:
            attrs[aspect] = "chosen" if ra[aspect] > rb[aspect] else "rejected" if ra[aspect] < rb[aspect] else "tie"
    if attrs:
        out["attributes"] = attrs
    return out


# ----------------------------------------------------------------------------- HH-RLHF

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def hh_transcript(text: Any, name: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages (content stripped)."""
    if not isinstance(text, str):
        raise SkipRow(f"{name}: must be a transcript string, got {type(text).__name__}")
    parts = _HH_TURN.split(text)
    if len(parts) < 3:
        raise SkipRow(f"{name}: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns found")
    if parts[0].strip():
        raise SkipRow(f"{name}: text before the first 'Human:' turn: {parts[0].strip()[:40]!r}")
    return [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
            for who, body in zip(parts[1::2], parts[2::2])]


def hh(row: dict, row_id: str) -> Rows:
    _require(row, "chosen", "rejected")
    chosen, rejected = hh_transcript(row["chosen"], "chosen"), hh_transcript(row["rejected"], "rejected")
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            raise SkipRow(f"{name}: transcript ends with a Human turn, not an Assistant response")
        if not conv[-1]["content"]:
            raise SkipRow(f"{name}: final Assistant response is empty")
    prompt, chosen_resp, rejected_resp = split_shared_prefix(chosen, rejected)
    return [{"id": row_id, **_passthrough(row, ()), "prompt": prompt, "chosen": chosen_resp,
             "rejected": rejected_resp}], []


# ----------------------------------------------------------------------------- TRL

def _split_strings(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Implicit prompt of two plain strings: their common prefix, cut at a word boundary so that
    no word is split; prompt + response reproduces each input exactly."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n < min(len(chosen), len(rejected)):  # the strings diverge inside a word: back up to its start
        while n > 0 and not chosen[n - 1].isspace():
            n -= 1
    cut = n
    while cut > 0 and chosen[cut - 1].isspace():  # leading whitespace belongs to the response
        cut -= 1
    if not chosen[:cut].strip():
        raise SkipRow("chosen and rejected share no prompt text (implicit prompt is empty)")
    return chosen[:cut], chosen[cut:], rejected[cut:]


def trl(row: dict, row_id: str) -> Rows:
    base = {"id": row_id, **_passthrough(row, ())}
    if "completion" in row or "label" in row:  # unpaired (KTO) rows
        _require(row, "prompt", "completion", "label")
        return [formats_agent.finish({**base, "prompt": _conv(row["prompt"], "prompt", "user"), "label": row["label"],
                                      "completion": _conv(row["completion"], "completion", "assistant")}, row)], []
    _require(row, "chosen", "rejected")
    chosen, rejected = row["chosen"], row["rejected"]
    if row.get("prompt") is None and isinstance(chosen, str) and isinstance(rejected, str):
        if "\n\nAssistant:" in chosen and "\n\nAssistant:" in rejected:
            return hh(row, row_id)  # HH transcripts are TRL's implicit-prompt strings too
        prompt, c, r = _split_strings(chosen, rejected)
        return [{**base, "prompt": prompt, "chosen": c, "rejected": r}], []
    return [formats_agent.finish({**base, **_pair_fields(row)}, row)], []


def _is_full_conversation(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(m, dict) and _ROLE.get(
        str(m.get("role", m.get("from"))).lower()) in ("user", "system") for m in value)


def _pair_fields(row: dict) -> dict:
    """prompt/chosen/rejected of a row with an explicit prompt, or with chosen/rejected holding the
    whole conversation (implicit prompt; as in TRL, this wins over a `prompt` field that repeats it)."""
    chosen, rejected = row["chosen"], row["rejected"]
    if _is_full_conversation(chosen) or _is_full_conversation(rejected):
        prompt, c, r = split_shared_prefix(formats_agent.link(messages(chosen, "chosen", "assistant")),
                                           formats_agent.link(messages(rejected, "rejected", "assistant")))
        return {"prompt": prompt, "chosen": c, "rejected": r}
    _require(row, "prompt")
    return {"prompt": _conv(row["prompt"], "prompt", "user"), "chosen": _conv(chosen, "chosen", "assistant"),
            "rejected": _conv(rejected, "rejected", "assistant")}


def _conv(value: Any, where: str, default_role: str) -> Any:
    """Strings stay strings (the record keeps them); messages are normalised."""
    return value if isinstance(value, str) else messages(value, where, default_role)


# ----------------------------------------------------------------------------- UltraFeedback

_UF_SCORE_KEYS = ("score", "fine-grained_score")
_UF_TEXT_KEYS = ("response", "text", "output")


def _uf_ratings(annotations: Any, field: str) -> dict[str, float]:
    """{aspect: rating} from UltraFeedback annotations ({"helpfulness": {"Rating": "4", ...}});
    'N/A' ratings are left out."""
    out = {}
    if isinstance(annotations, dict):
        for aspect, ann in annotations.items():
            if isinstance(ann, list) and ann:
                ann = ann[0]
            where = f"{field}.{aspect}"
            r = _number(ann.get("Rating"), f"{where}.Rating") if isinstance(ann, dict) else _number(ann, where)
            if r is not None:
                out[aspect] = r
    return out


def ultrafeedback(row: dict, row_id: str) -> Rows:
    if "score_chosen" in row or "score_rejected" in row:
        return _uf_binarized(row, row_id)
    prompt = row.get("instruction", row.get("prompt"))
    if prompt is None:
        raise SkipRow("missing field(s): instruction (or prompt)")
    comps = row.get("completions")
    if not isinstance(comps, list):
        raise SkipRow("completions: must be a list of rated completions")
    texts, scores, per, notes = [], [], [], []
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            notes.append(f"completions[{i}]: must be an object, got {type(c).__name__}")
            continue
        text = next((c[k] for k in _UF_TEXT_KEYS if isinstance(c.get(k), str)), None)
        ratings = _uf_ratings(c.get("annotations"), f"completions[{i}].annotations")
        # The mean of the aspect ratings (fine-grained_score) comes before overall_score: the
        # binarised UltraFeedback sets moved to it after overall_score turned out unreliable.
        score = next((_number(c[k], f"completions[{i}].{k}") for k in _UF_SCORE_KEYS
                      if _number(c.get(k), f"completions[{i}].{k}") is not None), None)
        if score is None and ratings:
            score = sum(ratings.values()) / len(ratings)
        if score is None:
            score = _number(c.get("overall_score"), f"completions[{i}].overall_score")
        if text is None or score is None:
            notes.append(f"completions[{i}]: " + ("no response text" if text is None else "no numeric score"))
            continue
        texts.append(text)
        scores.append(score)
        per.append({"model": c.get("model"), "ratings": ratings})
    if len(texts) < 2:
        raise SkipRow(f"fewer than 2 usable completions ({len(texts)})" + (f"; {'; '.join(notes)}" if notes else ""))
    base = _passthrough(row, ("instruction", "completions", "models"))
    rows, tie_notes = rated_pairs(prompt, texts, scores, base, row_id, per)
    return rows, notes + tie_notes


def _uf_binarized(row: dict, row_id: str) -> Rows:
    _require(row, "chosen", "rejected", "score_chosen", "score_rejected")
    sc, sr = _number(row["score_chosen"], "score_chosen"), _number(row["score_rejected"], "score_rejected")
    if sc is None or sr is None:
        raise SkipRow(f"score_chosen / score_rejected must be numbers, got {row['score_chosen']!r} / "
                      f"{row['score_rejected']!r}")
    if sc == sr:
        raise SkipRow(f"tie: score_chosen == score_rejected == {sc:g} (a tie is not a preference)")
    if sc < sr:
        raise SkipRow(f"score_chosen {sc:g} < score_rejected {sr:g}: the label contradicts the scores")
    base = {"id": row_id, **_passthrough(row, ("score_chosen", "score_rejected", "messages")),
            "margin": sc - sr}
    return [{**base, **_pair_fields(row)}], []


# ----------------------------------------------------------------------------- AlpacaEval

# Below this confidence (probability that chosen is better) a pair is flagged `close`.
CLOSE_BELOW = 0.75


def alpacaeval(row: dict, row_id: str) -> Rows:
    """Annotation rows (`preference` 1 = output_1 better, 2 = output_2 better, a value in between =
    1 + P(output_2 better), 1.5 = tie) or rows already paired (`p_output_2_better`)."""
    if "output_1" not in row and "chosen" in row:
        return _alpaca_paired(row, row_id)
    _require(row, "instruction", "output_1", "output_2")
    pref = _number(row.get("preference"), "preference")
    if pref is None:
        raise SkipRow(f"preference: no usable value ({row.get('preference')!r}; did the annotation fail?)")
    if pref == 0:
        raise SkipRow("preference 0: a draw, no chosen response")
    if not 1.0 <= pref <= 2.0:
        raise SkipRow(f"preference: must be 1, 2 or a value in [1, 2], got {pref:g}")
    p2 = pref - 1.0  # probability that output_2 is better
    if p2 == 0.5:
        raise SkipRow("tie (preference 1.5): no chosen response")
    g1, g2 = row.get("generator_1"), row.get("generator_2")
    first_wins = p2 < 0.5
    confidence = round(max(p2, 1.0 - p2), 12)  # round: 1.1 - 1 is 0.10000000000000009 in floats
    out = {"id": row_id, **_passthrough(row, ("instruction", "output_1", "output_2", "preference",
                                               "generator_1", "generator_2", "dataset")),
           "prompt": row["instruction"],
           "chosen": row["output_1"] if first_wins else row["output_2"],
           "rejected": row["output_2"] if first_wins else row["output_1"],
           "confidence": confidence, "close": confidence < CLOSE_BELOW, "preference": pref}
    if row.get("dataset") is not None and "category" not in row:
        out["category"] = row["dataset"]
    if g1 is not None or g2 is not None:
        out["chosen_model"], out["rejected_model"] = (g1, g2) if first_wins else (g2, g1)
        out.setdefault("source", f"{g1} vs {g2}")
    return [out], []


def _alpaca_paired(row: dict, row_id: str) -> Rows:
    _require(row, "prompt", "chosen", "rejected")
    out = {"id": row_id, **_passthrough(row, ("subset",)), "prompt": row["prompt"],
           "chosen": row["chosen"], "rejected": row["rejected"]}
    p2 = _number(row.get("p_output_2_better"), "p_output_2_better")
    if p2 is not None and p2 == 0.5:
        raise SkipRow("tie (p_output_2_better 0.5): no chosen response")
    if row.get("subset") is not None and "category" not in row:
        out["category"] = row["subset"]
    cm, rm = row.get("chosen_model"), row.get("rejected_model")
    if cm is not None and rm is not None and "source" not in row:
        # chosen is output_2 when p_output_2_better > 0.5: recover the original comparison order.
        g1, g2 = (rm, cm) if p2 is None or p2 > 0.5 else (cm, rm)
        out["source"] = f"{g1} vs {g2}"
    if p2 is not None and "close" not in row:
        out["close"] = max(p2, 1.0 - p2) < CLOSE_BELOW
    return [out], []


# ----------------------------------------------------------------------------- ShareGPT / LLaMA-Factory

def sharegpt(row: dict, row_id: str) -> Rows:
    _require(row, "conversations", "chosen", "rejected")
    prompt = messages(row["conversations"], "conversations", "user")
    if isinstance(row.get("system"), str) and row["system"].strip():
        prompt = [{"role": "system", "content": row["system"]}] + prompt
    if not prompt or prompt[-1]["role"] == "assistant":
        raise SkipRow("conversations: must end with a human turn (the one chosen/rejected answer)")
    return [{"id": row_id, **_passthrough(row, ("conversations", "system")), "prompt": prompt,
             "chosen": messages(row["chosen"], "chosen", "assistant"),
             "rejected": messages(row["rejected"], "rejected", "assistant")}], []


# ----------------------------------------------------------------------------- OpenAI

def openai(row: dict, row_id: str) -> Rows:
    """`{"input": {"messages"}, "preferred_output", "non_preferred_output"}` (preference fine-tuning)
    or `{"messages", "chosen", "rejected"}`."""
    if "input" in row:
        _require(row, "preferred_output", "non_preferred_output")
        inp = row["input"]
        if not isinstance(inp, dict) or inp.get("messages") is None:
            raise SkipRow("input: must be an object with messages")
        prompt, chosen, rejected = inp["messages"], row["preferred_output"], row["non_preferred_output"]
        base = _passthrough(row, ("input", "preferred_output", "non_preferred_output"))
    else:
        _require(row, "messages", "chosen", "rejected")
        prompt, chosen, rejected = row["messages"], row["chosen"], row["rejected"]
        base = _passthrough(row, ("messages",))
    return [formats_agent.finish({"id": row_id, **base, "prompt": messages(prompt, "messages", "user"), "chosen":
            messages(chosen, "chosen", "assistant"), "rejected": messages(rejected, "rejected", "assistant")}, row)], []


# ----------------------------------------------------------------------------- native

def native(row: dict, row_id: str) -> Rows:
    """preftune rows as they are; rated rows become pairs (as `RatedRecord.to_pairs`, ties noted)."""
    rec, problems = parse_row(row)
    if any(p.nonfinite for p in problems):
        raise NonFiniteNumber([(p.field, p.message) for p in problems if p.nonfinite])
    if problems:
        raise SkipRow("; ".join(str(p) for p in problems))
    assert rec is not None
    d = rec.to_dict()
    d.setdefault("id", row_id)
    if rec.kind != "rated":
        return [d], []
    meta = {k: d[k] for k in META_FIELDS if k in d and k not in ("id", "margin")}
    meta.update(rec.extra)
    return rated_pairs(rec.prompt, rec.completions, [float(s) for s in rec.scores], meta, d["id"])
