"""Train/test split by prompt group: every row with the same normalised prompt goes to the same side,
so no prompt is in both splits (a model is never tested on a prompt it was trained on).

Assignment: prompt groups are ordered by a seeded hash of their prompt key (so the result depends
on the seed and the set of prompts, not on the row order), then walked in that order; a group goes
to test when adding it brings the test row count closer to `test_frac * num_rows`. The achieved
fraction is within half the largest group of the target, and is reported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from preftune.data.curate import prompt_key
from preftune.data.records import Record


@dataclass
class SplitResult:
    train_indices: list[int]  # input positions, in input order
    test_indices: list[int]
    num_train_prompts: int
    num_test_prompts: int

    @property
    def test_frac(self) -> float:
        n = len(self.train_indices) + len(self.test_indices)
        return len(self.test_indices) / n if n else 0.0


def _rank(key: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=16).digest()


def split_keys(keys: Sequence[str], test_frac: float, seed: int = 0) -> SplitResult:
    """Split positions by group key (see module docstring)."""
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"--test-frac must be strictly between 0 and 1, got {test_frac}")
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    target = test_frac * len(keys)
    num_test = 0
    test_groups: set[str] = set()
    for k in sorted(groups, key=lambda k: _rank(k, seed)):
        size = len(groups[k])
        if abs(num_test + size - target) < abs(num_test - target):
            test_groups.add(k)
            num_test += size
    test = [i for i, k in enumerate(keys) if k in test_groups]
    train = [i for i, k in enumerate(keys) if k not in test_groups]
    return SplitResult(train, test, len(groups) - len(test_groups), len(test_groups))


def split_records(records: Sequence[Record], test_frac: float, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """(train, test) records, no normalised prompt in both, deterministic for a seed."""
    res = split_keys([prompt_key(r) for r in records], test_frac, seed)
    return [records[i] for i in res.train_indices], [records[i] for i in res.test_indices]
