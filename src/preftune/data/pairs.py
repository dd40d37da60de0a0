"""Pair files for training and evaluation: read every row, expand rated rows into pairs, and refuse
rows that cannot be pairs (unpaired rows), naming the file and row."""

from __future__ import annotations

from dataclasses import dataclass


def load_pairs(path: str, rated_min_margin: float = 0.0) -> tuple[list, dict]:
    """PairRecords of a file; rated rows become pairs with a margin. ValueError names file/line/field."""
    from preftune.data.io import read_located
    from preftune.data.records import PairRecord, RatedRecord

    pairs, counts = [], {"num_pair_rows": 0, "num_rated_rows": 0, "num_pairs_from_rated": 0}
    for i, (line, rec) in enumerate(read_located(path)):
        if isinstance(rec, PairRecord):
            pairs.append(rec)
            counts["num_pair_rows"] += 1
        elif isinstance(rec, RatedRecord):
            new = rec.to_pairs(rated_min_margin)
            pairs += new
            counts["num_rated_rows"] += 1
            counts["num_pairs_from_rated"] += len(new)
        else:
            msg = (f"{path}:{line}: row: row {i + 1} is an unpaired row (prompt/completion/label); a reward model "
                   "trains on pairs (prompt/chosen/rejected) or rated rows (completions/scores)")
            raise ValueError(msg)  # noqa: TRY004 (user input: the CLI reports ValueErrors)
    if not pairs:
        raise ValueError(f"{path}: no pairs to train on")
    return pairs, counts


@dataclass
class PreferenceRows:
    """The rows of a preference file: pairs (rated rows expanded) and unpaired (prompt/completion/label)."""
    pairs: list                    # PairRecord, in file order (a rated row's pairs where the row was)
    unpaired: list                 # UnpairedRecord, in file order
    first_unpaired_row: int | None  # the line (row number for tables) of the first unpaired row
    num_rated: int                 # rated rows expanded into pairs


def read_preference_rows(path: str) -> PreferenceRows:
    """Every row of a file as pairs or unpaired rows; rated rows become pairs (every two completions
    whose scores differ). ValueError names file/line/field for a bad row."""
    from preftune.data.io import read_located
    from preftune.data.records import PairRecord, RatedRecord, UnpairedRecord

    out = PreferenceRows([], [], None, 0)
    for line, r in read_located(path):
        if isinstance(r, RatedRecord):
            out.num_rated += 1
            out.pairs += r.to_pairs()
        elif isinstance(r, PairRecord):
            out.pairs.append(r)
        elif isinstance(r, UnpairedRecord):
            out.unpaired.append(r)
            if out.first_unpaired_row is None:
                out.first_unpaired_row = line
    return out
