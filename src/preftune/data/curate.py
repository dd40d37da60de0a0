"""Curation: remove rows that would mislead training or evaluation, and say why for each one.

Checks, in the order a row meets them (a row is removed for the first reason that applies):
1. `empty_response`: a response is empty after whitespace normalisation.
2. `identical_responses`: chosen and rejected are the same after whitespace/case normalisation.
3. `over_length`: prompt + longest response exceeds `max_length` tokens (only with a tokenizer).
4. `test_leak`: the normalised prompt appears in a test file.
5. Groups of the same pair (same prompt and the same two responses, in either order):
   - all copies agree: the first is kept, the others are `exact_duplicate` of it;
   - labelled both ways with a majority: minority copies are `conflict_minority`, extra majority
     copies `exact_duplicate`; the first majority copy is kept;
   - labelled both ways without a majority: every copy is `conflict_no_majority`.
   Unpaired rows group on (prompt, completion) and their label plays the orientation's part.
6. `near_duplicate`: same prompt, same orientation, and each response's word-shingle Jaccard
   similarity with an earlier kept row >= `near_dup_threshold`. Candidates come from MinHash/LSH
   (numpy), so the cost grows with the number of rows, not its square; every candidate is then
   verified with the exact Jaccard, so no row is removed on an estimate.
Invalid rows (failing `parse_row`) are handled by the caller (`invalid`).

Invariant: len(kept) + len(removed) == number of input rows.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from preftune.data.records import Conversation, PairRecord, RatedRecord, Record, UnpairedRecord, render_text


class Reason(str, enum.Enum):
    INVALID = "invalid"
    EMPTY_RESPONSE = "empty_response"
    IDENTICAL_RESPONSES = "identical_responses"
    OVER_LENGTH = "over_length"
    TEST_LEAK = "test_leak"
    EXACT_DUPLICATE = "exact_duplicate"
    CONFLICT_MINORITY = "conflict_minority"
    CONFLICT_NO_MAJORITY = "conflict_no_majority"
    NEAR_DUPLICATE = "near_duplicate"
    # acting on an audit report (data/curate_audit.py)
    SUSPECTED_MISLABEL = "suspected_mislabel"
    AGGREGATED = "aggregated"
    AGGREGATE_NO_MAJORITY = "aggregate_no_majority"


@dataclass
class Removal:
    """One removed row: its line (or 1-based index), id, reason, a human detail, and for duplicates
    the line of the kept row it duplicates."""
    line: int
    id: str | None
    reason: Reason
    detail: str = ""
    duplicate_of: int | None = None

    def to_dict(self) -> dict:
        return {"line": self.line, "id": self.id, "reason": self.reason.value, "detail": self.detail,
                "duplicate_of": self.duplicate_of}


@dataclass
class CurateResult:
    kept: list[Record]
    kept_indices: list[int]           # positions in the input of the kept rows, in order
    removed: list[Removal]            # sorted by line
    num_input: int

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.removed:
            out[r.reason.value] = out.get(r.reason.value, 0) + 1
        return dict(sorted(out.items()))

    def report(self) -> dict:
        """The JSON report (keys: num_input, num_kept, num_removed, counts, removed)."""
        return {"num_input": self.num_input, "num_kept": len(self.kept), "num_removed": len(self.removed),
                "counts": self.counts, "removed": [r.to_dict() for r in self.removed]}


# ---------------------------------------------------------------- normalised keys

def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for every comparison."""
    return " ".join(text.casefold().split())


def conversation_key(conv: Conversation) -> str:
    return normalize_text(render_text(conv))


def prompt_key(rec: Record) -> str:
    return conversation_key(rec.prompt)


def pair_key(rec: Record) -> tuple[Any, bool]:
    """(group key, orientation). Two rows with the same group key are the same comparison; their
    orientations differ when they are labelled opposite ways. For pairs the key holds the two
    responses sorted, and the orientation is True when chosen sorts first."""
    p = prompt_key(rec)
    if isinstance(rec, PairRecord):
        c, r = conversation_key(rec.chosen), conversation_key(rec.rejected)
        return ("pair", p, min(c, r), max(c, r)), c <= r
    if isinstance(rec, UnpairedRecord):
        return ("unpaired", p, conversation_key(rec.completion)), bool(rec.label)
    assert isinstance(rec, RatedRecord)
    comps = tuple(conversation_key(c) for c in rec.completions)
    return ("rated", p, comps, tuple(float(s) for s in rec.scores)), True


def responses(rec: Record) -> list[Conversation]:
    if isinstance(rec, PairRecord):
        return [rec.chosen, rec.rejected]
    if isinstance(rec, UnpairedRecord):
        return [rec.completion]
    return list(rec.completions)


# ---------------------------------------------------------------- token lengths

def token_lengths(records: Sequence[Record], tokenizer: Any) -> list[int]:
    """Tokens of prompt + longest response per record (rendered text, plus the special tokens the
    tokenizer adds to a pair). Approximate: a chat template adds a few tokens per turn."""
    prompts = [render_text(r.prompt) for r in records]
    resp = [[render_text(c) for c in responses(r)] for r in records]
    flat = [t for rs in resp for t in rs]
    ids_p = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    ids_r = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    extra = tokenizer.num_special_tokens_to_add(pair=True) if hasattr(tokenizer, "num_special_tokens_to_add") else 0
    out, k = [], 0
    for i, rs in enumerate(resp):
        longest = max((len(ids_r[k + j]) for j in range(len(rs))), default=0)
        k += len(rs)
        out.append(len(ids_p[i]) + longest + extra)
    return out


# ---------------------------------------------------------------- near duplicates

_NUM_PERM = 128
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    # Case- and punctuation-insensitive: "today" and "Today!" are the same word here.
    return _WORD.findall(text.casefold())


def shingles(text: str, n: int = 3) -> set[tuple]:
    """The word n-grams of a text (the whole text as one gram when shorter than n words)."""
    words = _words(text)
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


class _Shingler:
    """Word trigrams as tuples of per-run word ids: the same sets as `shingles` up to renaming, but
    hashing tuples of ints is fast and, unlike str hashing, the same in every process."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str) -> set[tuple]:
        v = self.vocab
        ids = [v.setdefault(w, len(v)) for w in _words(text)]
        if len(ids) < 3:
            return {tuple(ids)} if ids else set()
        return set(zip(ids, ids[1:], ids[2:]))


def jaccard(a: set[int], b: set[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _lsh_shape(threshold: float) -> tuple[int, int]:
    """(bands, rows per band): the most selective banding that still catches a pair at the threshold
    with probability >= 0.995 (fewer false candidates, each of which costs an exact check)."""
    for r in (16, 8, 4, 2, 1):
        b = _NUM_PERM // r
        if 1 - (1 - threshold ** r) ** b >= 0.995:
            return b, r
    return _NUM_PERM, 1


def minhash_signatures(values: Sequence[Sequence[int]], seed: int = 0):
    """(N, 128) uint64 MinHash signatures of N sets of 32-bit ints, with multiply-shift hashing
    ((a*x + b) mod 2^64) >> 32 (uint64 products wrap, which is what the scheme wants). An empty
    set gets all-max, so it matches only other empty sets."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=_NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=_NUM_PERM, dtype=np.uint64)
    sig = np.full((len(values), _NUM_PERM), np.iinfo(np.uint64).max, dtype=np.uint64)
    lengths = np.array([len(s) for s in values], dtype=np.int64)
    if lengths.sum() == 0:
        return sig
    flat = np.fromiter((x for s in values for x in s), dtype=np.uint64, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = starts + lengths
    nonempty = np.flatnonzero(lengths)
    # Chunks of ~32k values keep the (chunk, 128) temporary near 32 MB on 50k-row files.
    c0 = 0
    while c0 < len(nonempty):
        c1 = max(c0 + 1, int(np.searchsorted(ends[nonempty], starts[nonempty[c0]] + 32768, side="right")))
        rows = nonempty[c0:c1]
        lo, hi = starts[rows[0]], ends[rows[-1]]
        with np.errstate(over="ignore"):
            h = (a[:, None] * flat[None, lo:hi] + b[:, None]) >> np.uint64(32)  # (128, chunk)
        # Reducing along the contiguous axis is ~2.5x faster than along axis 0.
        sig[rows] = np.minimum.reduceat(h, starts[rows] - lo, axis=1).T
        c0 = c1
    return sig


def _near_head(rec: Record) -> tuple:
    """What must match exactly between near duplicates: the kind, the prompt, and for unpaired rows
    the label (chosen is compared with chosen and rejected with rejected, so pairs keep their side)."""
    label = (bool(rec.label),) if isinstance(rec, UnpairedRecord) else ()
    return (rec.kind, prompt_key(rec)) + label


def find_near_duplicates(records: Sequence[Record], candidates: Sequence[int], threshold: float,
                         ) -> dict[int, tuple[int, float]]:
    """Among `candidates` (input positions, in order), map each near-duplicate position to
    (position of the earlier kept row it duplicates, its lowest response similarity)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-dup threshold must be in (0, 1], got {threshold}")
    cands = [i for i in candidates if not isinstance(records[i], RatedRecord)]
    shingler = _Shingler()
    resp_sets = {i: [shingler(render_text(c)) for c in responses(records[i])] for i in cands}
    # One set per row, each response's grams tagged with its position: a row pair with every
    # response Jaccard >= t has combined Jaccard >= t (a mediant of ratios >= t), so LSH on the
    # combined set proposes every true pair with the banding's probability (>= 0.995 at t).
    combined = [[hash((k, g)) & 0xFFFFFFFF for k, grams in enumerate(resp_sets[i]) for g in grams]
                for i in cands]
    if not cands:
        return {}
    sig = minhash_signatures(combined)
    bands, rows = _lsh_shape(threshold)
    buckets: dict[tuple, list[int]] = {}
    found: dict[int, tuple[int, float]] = {}
    for n, i in enumerate(cands):
        head = _near_head(records[i])
        keys = [head + (bd, sig[n, bd * rows:(bd + 1) * rows].tobytes()) for bd in range(bands)]
        # The earliest kept row that verifies wins, as in the brute-force oracle.
        for j in sorted({j for k in keys for j in buckets.get(k, ())}):
            sims = [jaccard(x, y) for x, y in zip(resp_sets[i], resp_sets[j])]
            if len(resp_sets[i]) == len(resp_sets[j]) and min(sims) >= threshold:
                found[i] = (j, min(sims))
                break
        if i not in found:  # only kept rows are representatives
            for k in keys:
                buckets.setdefault(k, []).append(i)
    return found


def near_duplicates_bruteforce(records: Sequence[Record], candidates: Sequence[int], threshold: float,
                               ) -> dict[int, int]:
    """O(n^2) oracle of `find_near_duplicates` (for tests): position -> earliest kept duplicate."""
    found: dict[int, int] = {}
    kept: list[int] = []
    for i in candidates:
        if isinstance(records[i], RatedRecord):
            continue
        si = [shingles(render_text(c)) for c in responses(records[i])]
        for j in kept:
            sj = [shingles(render_text(c)) for c in responses(records[j])]
            same_head = _near_head(records[i]) == _near_head(records[j])
            if same_head and min(jaccard(x, y) for x, y in zip(si, sj)) >= threshold:
                found[i] = j
                break
        else:
            kept.append(i)
    return found


# ---------------------------------------------------------------- the pipeline

@dataclass
class _State:
    lines: list[int]
    ids: list[str | None]
    removed: dict[int, Removal] = field(default_factory=dict)

    def drop(self, i: int, reason: Reason, detail: str = "", dup_of: int | None = None) -> None:
        assert i not in self.removed
        self.removed[i] = Removal(self.lines[i], self.ids[i], reason, detail,
                                  None if dup_of is None else self.lines[dup_of])


def _row_checks(records: Sequence[Record], st: _State, test_prompts: set[str],
                tokenizer: Any, max_length: int | None) -> None:
    lengths = token_lengths(records, tokenizer) if tokenizer is not None and max_length else None
    for i, rec in enumerate(records):
        keys = [conversation_key(c) for c in responses(rec)]
        if any(not k for k in keys):
            st.drop(i, Reason.EMPTY_RESPONSE, "a response is empty")
        elif isinstance(rec, PairRecord) and keys[0] == keys[1]:
            st.drop(i, Reason.IDENTICAL_RESPONSES, "chosen and rejected are the same text")
        elif lengths is not None and lengths[i] > max_length:
            st.drop(i, Reason.OVER_LENGTH, f"{lengths[i]} tokens > max length {max_length}")
        elif test_prompts and prompt_key(rec) in test_prompts:
            st.drop(i, Reason.TEST_LEAK, "the prompt appears in a test file")


def _group_checks(records: Sequence[Record], st: _State) -> None:
    groups: dict[Any, list[tuple[int, bool]]] = {}
    for i, rec in enumerate(records):
        if i not in st.removed:
            key, orient = pair_key(rec)
            groups.setdefault(key, []).append((i, orient))
    for members in groups.values():
        if len(members) == 1:
            continue
        yes = [i for i, o in members if o]
        no = [i for i, o in members if not o]
        if yes and no and len(yes) == len(no):
            lines = ", ".join(str(st.lines[i]) for i, _ in members)
            for i, _ in members:
                st.drop(i, Reason.CONFLICT_NO_MAJORITY,
                        f"labelled both ways {len(yes)}:{len(no)} (lines {lines}); no majority, every copy removed")
            continue
        major, minor = (yes, no) if len(yes) > len(no) else (no, yes)
        keep = major[0]
        for i in major[1:]:
            st.drop(i, Reason.EXACT_DUPLICATE, f"same pair as line {st.lines[keep]}", keep)
        for i in minor:
            st.drop(i, Reason.CONFLICT_MINORITY,
                    f"labelled the other way than the majority ({len(minor)} vs {len(major)} copies); "
                    f"kept line {st.lines[keep]}", keep)


def curate_records(records: Sequence[Record], *, lines: Sequence[int] | None = None,
                   test_prompts: Iterable[str] = (), tokenizer: Any = None, max_length: int | None = None,
                   near_dup_threshold: float | None = 0.9) -> CurateResult:
    """Apply every check (module docstring) to parsed records. `lines` gives each record's line for
    the report (default: 1-based position); `test_prompts` are prompt texts or keys (normalised here);
    `near_dup_threshold` None turns the near-duplicate check off."""
    if lines is None:
        lines = list(range(1, len(records) + 1))
    if len(lines) != len(records):
        raise ValueError(f"{len(lines)} lines for {len(records)} records")
    if max_length is not None and tokenizer is None:
        raise ValueError("max_length needs a tokenizer (--tokenizer MODEL)")
    st = _State(list(lines), [r.id for r in records])
    _row_checks(records, st, {normalize_text(p) for p in test_prompts}, tokenizer, max_length)
    _group_checks(records, st)
    if near_dup_threshold is not None:
        alive = [i for i in range(len(records)) if i not in st.removed]
        for i, (j, sim) in find_near_duplicates(records, alive, near_dup_threshold).items():
            st.drop(i, Reason.NEAR_DUPLICATE, f"responses {sim:.2f} similar to line {st.lines[j]}", j)
    kept_idx = [i for i in range(len(records)) if i not in st.removed]
    removed = sorted(st.removed.values(), key=lambda r: r.line)
    assert len(kept_idx) + len(removed) == len(records)
    return CurateResult([records[i] for i in kept_idx], kept_idx, removed, len(records))


def merge_removals(result: CurateResult, extra: Sequence[Removal]) -> CurateResult:
    """Add removals decided before curation (e.g. invalid rows) to a result; counts stay exact."""
    removed = sorted([*result.removed, *extra], key=lambda r: r.line)
    return CurateResult(result.kept, result.kept_indices, removed, result.num_input + len(extra))


def load_test_prompts(paths: Iterable[str]) -> set[str]:
    """Normalised prompt keys of every row of the given files (pairs, unpaired, rated, or rows with
    just a `prompt`). A row without a usable prompt is an error naming its file and line."""
    from preftune.data.io import iter_raw

    keys: set[str] = set()
    for path in paths:
        for raw in iter_raw(path):
            if raw.error is not None:
                raise ValueError(f"{raw.where}: {raw.error}")
            prompt = raw.row.get("prompt") if isinstance(raw.row, dict) else None
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            elif isinstance(prompt, dict):
                prompt = [prompt]
            if not (isinstance(prompt, list) and prompt
                    and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)):
                raise ValueError(f"{raw.where}: prompt: a test file needs a prompt (text or messages) on every row")
            keys.add(conversation_key([{"role": m.get("role", "user"), "content": m["content"]} for m in prompt]))
    return keys
