"""Prompt files (online RL, policy evaluation, best-of-N, on-policy sampling): one prompt per row,
checked like every record (FILE:LINE: field: message), every other column kept.

A row is an object with `prompt` (a string, a message, or a list of messages with known roles) or a
bare JSON string. A row without a usable prompt is an error; no row is skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PromptRow:
    prompt: list[dict]                                    # normalised messages
    columns: dict[str, Any] = field(default_factory=dict)  # every other key of the row
    where: str = ""                                       # FILE:LINE
    raw: Any = None                                       # the prompt as written (a string stays a string)


def parse_prompt(value: Any, where: str) -> list[dict]:
    """Normalised messages of a prompt value; ValueError naming FILE:LINE and the field."""
    from preftune.data.records import _conversation

    problems: list = []
    msgs = _conversation(value, "prompt", "user", problems)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(str(p) for p in problems))
    return msgs


def read_prompt_rows(path: str | Path, num_prompts: int | None = None) -> list[PromptRow]:
    """Every prompt row of a file (the first num_prompts when given); ValueError for the first bad row."""
    from preftune.data.io import iter_raw

    p = Path(path)
    if not p.exists():
        raise ValueError(f"prompts file {p} does not exist")
    rows: list[PromptRow] = []
    for raw in iter_raw(p):
        if raw.error is not None:
            raise ValueError(f"{raw.where}: {raw.error}")
        row = raw.row
        if isinstance(row, str):
            rows.append(PromptRow(parse_prompt(row, raw.where), {}, raw.where, row))
        elif isinstance(row, dict) and "prompt" in row:
            rows.append(PromptRow(parse_prompt(row["prompt"], raw.where),
                                  {k: v for k, v in row.items() if k != "prompt"}, raw.where, row["prompt"]))
        else:
            raise ValueError(f"{raw.where}: prompt: is missing (need a string or a list of {{role, content}} messages)")
        if num_prompts is not None and len(rows) >= num_prompts:
            break
    if not rows:
        raise ValueError(f"{p}: no prompts")
    return rows
