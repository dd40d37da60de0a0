"""Whole-file validation for `preftune data check`.

Per-row problems come from `records.parse_row` (bad types, missing or empty fields, unknown roles,
confidence outside [0, 1], chosen identical to rejected, ...). This module adds the checks that need
more context than one normalised row:
- duplicate ids (cross-row),
- rows of a different kind (pair / unpaired / rated) than the file's first row (cross-row),
- a response given as a message list that does not end with an assistant turn (the trainer would
  learn to produce the wrong speaker),
- a prompt given as a message list that does not end with a user (or tool) turn (there would be
  nothing for the response to answer).

Every problem carries its location, so the output is `FILE:LINE: field: message`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.data.io import RawRow, iter_raw
from preftune.data.records import ROLES, parse_row, row_kind

# Conversation fields that hold a model response (must end with the assistant speaking).
_RESPONSE_FIELDS = ("chosen", "rejected", "completion")
# A prompt may end with a tool result: the assistant answers it.
_PROMPT_LAST_ROLES = ("user", "tool")


@dataclass
class LocatedProblem:
    """One problem of one row: where (file, line; 0 = the file as a whole), which field, what."""
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        return f"{where}: {self.field}: {self.message}"

    def to_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


@dataclass
class CheckResult:
    """Every problem of a file, in line order, and how many rows were read."""
    path: str
    num_rows: int = 0
    problems: list[LocatedProblem] = field(default_factory=list)

    @property
    def num_bad_rows(self) -> int:
        return len({p.line for p in self.problems if p.line > 0})

    @property
    def ok(self) -> bool:
        return not self.problems


def _last_role(value: Any) -> str | None:
    """The role of the last message when `value` is a non-empty list of message objects."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        role = value[-1].get("role")
        # An unknown role is already reported by parse_row; do not report it twice.
        return role if role in ROLES else None
    return None


def turn_problems(row: dict) -> list[tuple[str, str]]:
    """(field, message) for message lists whose last turn is the wrong speaker. Works on the raw row,
    so it reports even when other problems keep the row from parsing."""
    out: list[tuple[str, str]] = []
    role = _last_role(row.get("prompt"))
    if role is not None and role not in _PROMPT_LAST_ROLES:
        out.append(("prompt", f"must end with a user turn (the one the response answers), ends with {role!r}"))
    for name in _RESPONSE_FIELDS:
        role = _last_role(row.get(name))
        if role is not None and role != "assistant":
            out.append((name, f"must end with an assistant turn, ends with {role!r}"))
    comps = row.get("completions")
    if isinstance(comps, list):
        for i, c in enumerate(comps):
            role = _last_role(c)
            if role is not None and role != "assistant":
                out.append((f"completions[{i}]", f"must end with an assistant turn, ends with {role!r}"))
    return out


def _split_error(error: str) -> tuple[str, str]:
    # io errors read "json: invalid JSON (...)": the part before the first ": " is the field.
    head, sep, tail = error.partition(": ")
    return (head, tail) if sep else ("row", error)


def check_rows(raws: Iterable[RawRow], path: str = "") -> CheckResult:
    """Validate rows as read by `iter_raw`; never stops at the first problem."""
    result = CheckResult(path=path)
    first_id: dict[str, int] = {}
    file_kind: tuple[str, int] | None = None  # (kind, line of the first row that set it)
    for raw in raws:
        result.num_rows += 1
        result.path = result.path or raw.path

        def add(fld: str, msg: str, raw: RawRow = raw) -> None:
            result.problems.append(LocatedProblem(raw.path, raw.line, fld, msg))

        if raw.error is not None:
            add(*_split_error(raw.error))
            continue
        for p in parse_row(raw.row)[1]:
            add(p.field, p.message)
        if not isinstance(raw.row, dict):
            continue
        for fld, msg in turn_problems(raw.row):
            add(fld, msg)
        rid = raw.row.get("id")
        if isinstance(rid, (str, int)) and not isinstance(rid, bool):
            key = str(rid)
            if key in first_id:
                add("id", f"duplicate id {key!r} (first used on line {first_id[key]})")
            else:
                first_id[key] = raw.line
        kind = row_kind(raw.row)
        if kind is not None:
            if file_kind is None:
                file_kind = (kind, raw.line)
            elif kind != file_kind[0]:
                add("row", f"is a {kind} row but the file holds {file_kind[0]} rows (from line {file_kind[1]}); "
                           "keep one kind per file")
    if result.num_rows == 0:
        result.problems.append(LocatedProblem(result.path, 0, "file", "has no rows"))
    return result


def check_file(path: str | Path) -> list[LocatedProblem]:
    """Every problem of a file (empty list = clean). ValueError when the file does not exist or its
    format cannot be told from its name."""
    return check_rows(iter_raw(path), str(path)).problems


def check_path(path: str | Path) -> CheckResult:
    """Like `check_file`, with the row count (for the summary line)."""
    return check_rows(iter_raw(path), str(path))
