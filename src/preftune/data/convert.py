"""Convert preference data from public formats into preftune records (`preftune data convert`).

    preftune data convert --from hh train.jsonl.gz -o pairs.jsonl

Formats (`Format`): hh (Anthropic HH-RLHF transcripts), trl (TRL standard / conversational,
explicit or implicit prompt, and unpaired rows), ultrafeedback (rated completions -> pairs with
a margin, or the binarised chosen/rejected + scores), alpacaeval (annotation rows with
`preference`, or rows already paired), sharegpt (LLaMA-Factory ranking rows), openai (`messages`
or preference fine-tuning rows), preftune (native rows, validated), and auto (guessed from the
keys of the first rows). The per-format parsing lives in `preftune.data.formats`.

Every output record passes `validate_row`; every input row that gives no record (or gives fewer
than it could, e.g. tied completions) is listed in `ConvertResult.skipped` with its location
and the reason. Nothing is dropped silently. Two kinds of problem stop the conversion instead
(`ConvertResult.errors`; `convert_file` then writes nothing): NaN / Infinity in any numeric field
of an input row, and output that `preftune data check` would reject as a whole (a response whose
last turn is not the assistant's, pair and unpaired rows in one file, a repeated id).
"""

from __future__ import annotations

import enum
import itertools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from preftune.data import formats
from preftune.data.io import RawRow, iter_raw, write_rows
from preftune.data.records import (
    META_FIELDS,
    PairRecord,
    UnpairedRecord,
    nonfinite_paths,
    parse_row,
    show_number,
)
from preftune.data.validate import LocatedProblem, check_rows

# How many leading readable rows `auto` looks at, and how many skipped lines the CLI prints.
AUTO_SAMPLE = 20
MAX_PRINTED_SKIPS = 50
# Share of the sampled rows that must look like one format for `auto` to pick it.
AUTO_MAJORITY = 0.8


class Format(enum.Enum):
    HH = "hh"
    TRL = "trl"
    ULTRAFEEDBACK = "ultrafeedback"
    ALPACAEVAL = "alpacaeval"
    SHAREGPT = "sharegpt"
    OPENAI = "openai"
    PREFTUNE = "preftune"
    AUTO = "auto"

    @property
    def converter(self) -> Callable[[dict, str], formats.Rows]:
        """row, id -> (rows, notes); the one dispatch from format to parser."""
        if self is Format.AUTO:
            raise ValueError("auto is resolved to a concrete format before converting")
        return {Format.HH: formats.hh, Format.TRL: formats.trl, Format.ULTRAFEEDBACK: formats.ultrafeedback,
                Format.ALPACAEVAL: formats.alpacaeval, Format.SHAREGPT: formats.sharegpt,
                Format.OPENAI: formats.openai, Format.PREFTUNE: formats.native}[self]

    @classmethod
    def parse(cls, name: str) -> Format:
        try:
            return cls(name.lower())
        except ValueError:
            raise ValueError(f"unknown format {name!r}; use one of: {format_names()}") from None


def format_names() -> str:
    return ", ".join(f.value for f in Format)


@dataclass
class ConvertResult:
    records: list[PairRecord | UnpairedRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # ("FILE:LINE", reason), input order
    detected_format: str | None = None            # the format used (the guess when fmt was auto)
    guessed: bool = False                         # True when detected_format came from auto
    num_rows: int = 0                             # input rows read (readable or not)
    skipped_path: Path | None = None              # where convert_file wrote the skipped lines
    origins: list[tuple[str, int]] = field(default_factory=list)  # (file, line) of each record's input row
    # Problems that stop the conversion (convert_file writes nothing): NaN / Infinity in an input row,
    # and converted rows that `preftune data check` would reject as a file (wrong last speaker, pair
    # and unpaired rows mixed, duplicate ids), located at the input row they came from.
    errors: list[LocatedProblem] = field(default_factory=list)
    warnings: list[LocatedProblem] = field(default_factory=list)  # said on stderr, written anyway


def guess_format(row: dict) -> Format | None:
    """The format one row looks like, from its keys (None when it fits none)."""
    keys = set(row)
    if "input" in keys and "preferred_output" in keys:
        return Format.OPENAI
    if "conversations" in keys:
        return Format.SHAREGPT
    if keys & {"output_1", "output_2", "p_output_2_better", "chosen_model"}:
        return Format.ALPACAEVAL
    if keys & {"score_chosen", "score_rejected"}:
        return Format.ULTRAFEEDBACK
    if "completions" in keys:
        return Format.PREFTUNE if "scores" in keys else Format.ULTRAFEEDBACK
    if "messages" in keys and keys & {"chosen", "rejected"}:
        return Format.OPENAI
    if {"chosen", "rejected"} <= keys:
        c = row["chosen"]
        if "prompt" not in keys and isinstance(c, str) and "\n\nAssistant:" in c:
            return Format.HH
        # Native rows are valid TRL rows too; the rubric metadata says they were written for preftune.
        meta = keys & (set(META_FIELDS) - {"id"})
        return Format.PREFTUNE if meta else Format.TRL
    if {"prompt", "completion", "label"} <= keys:
        return Format.PREFTUNE if keys & (set(META_FIELDS) - {"id"}) else Format.TRL
    return None


def _resolve_auto(sample: list[RawRow], where: str) -> Format:
    guesses: dict[Format, int] = {}
    unknown = []
    for raw in sample:
        g = guess_format(raw.row) if isinstance(raw.row, dict) else None
        if g is None:
            unknown.append(raw)
        else:
            guesses[g] = guesses.get(g, 0) + 1
    # TRL and native rows differ only by metadata that may be absent from some rows.
    if Format.TRL in guesses and Format.PREFTUNE in guesses:
        guesses[Format.PREFTUNE] += guesses.pop(Format.TRL)
    # A few defective rows among the first ones (real HH files have some) must not defeat the
    # guess; they are reported as skipped lines by the converter of the majority format.
    if guesses:
        best = max(guesses, key=lambda f: guesses[f])
        if guesses[best] >= AUTO_MAJORITY * sum(guesses.values()):
            return best
    if not guesses:
        keys = sorted(unknown[0].row) if unknown and isinstance(unknown[0].row, dict) else []
        raise ValueError(f"{where}: cannot tell the format from the first rows (keys: "
                         f"{', '.join(keys) or 'none'}); pass --from with one of: {format_names()}")
    seen = ", ".join(f"{f.value} ({n} rows)" for f, n in guesses.items())
    raise ValueError(f"{where}: the first rows look like different formats ({seen}); "
                     f"pass --from with one of: {format_names()}")


def convert_rows(rows: Iterable[RawRow], fmt: str | Format, path: str = "") -> ConvertResult:
    """Convert raw rows (from `iter_raw`) of format `fmt` ('auto' guesses from the first rows).
    Returns the valid records, every skipped input as ("FILE:LINE", reason), and the format used."""
    fmt = fmt if isinstance(fmt, Format) else Format.parse(fmt)
    it = iter(rows)
    result = ConvertResult(guessed=fmt is Format.AUTO)
    if fmt is Format.AUTO:
        head = list(itertools.islice(it, AUTO_SAMPLE * 5))
        if not head:
            raise ValueError(f"{path or 'input'}: no rows to convert; cannot guess the format")
        fmt = _resolve_auto([r for r in head if r.error is None][:AUTO_SAMPLE], head[0].path)
        it = itertools.chain(head, it)
    result.detected_format = fmt.value
    convert = fmt.converter
    for raw in it:
        result.num_rows += 1
        if raw.error is not None:
            result.skipped.append((raw.where, raw.error))
            continue
        if not isinstance(raw.row, dict):
            result.skipped.append((raw.where, f"row must be a JSON object, got {type(raw.row).__name__}"))
            continue
        bad = [(k, x) for key, v in raw.row.items() for k, x in nonfinite_paths(v, key)]
        if bad:  # never a skip: NaN / Infinity mean a broken source, and would sort as any winner
            result.errors += [LocatedProblem(raw.path, raw.line, k, f"must be a finite number, got {show_number(x)}")
                              for k, x in bad]
            continue
        try:
            out_rows, notes = convert(raw.row, f"{Path(raw.path).name}:{raw.line}")
        except formats.NonFiniteNumber as e:
            result.errors += [LocatedProblem(raw.path, raw.line, f, m) for f, m in e.problems]
            continue
        except formats.SkipRow as e:
            result.skipped.append((raw.where, str(e)))
            continue
        result.skipped.extend((raw.where, note) for note in notes)
        for out in out_rows:
            rec, problems = parse_row(out)
            if problems:  # the converted row is not a valid record: say why instead of writing it
                result.skipped.append((raw.where, "; ".join(str(p) for p in problems)))
            else:
                assert isinstance(rec, (PairRecord, UnpairedRecord))
                result.records.append(rec)
                result.origins.append((raw.path, raw.line))
    for p in output_problems(result):
        # Native rows mixing kinds are the user's own file as written (`data check IN` shows it, and
        # loss=kto trains on both kinds): said, not refused. From another format it is refused.
        mixed_native = fmt is Format.PREFTUNE and p.field == "row" and p.message.startswith("is a ")
        (result.warnings if mixed_native else result.errors).append(p)
    return result


def output_problems(result: ConvertResult) -> list[LocatedProblem]:
    """What `preftune data check` would report on the records about to be written, located at the
    input rows they came from (a ShareGPT `chosen` ending with a user turn, TRL pairs and unpaired
    rows in one file, two rows with one id)."""
    raws = [RawRow(path, line, rec.to_dict()) for rec, (path, line) in zip(result.records, result.origins)]
    return [LocatedProblem(p.path, p.line, p.field, f"{p.message} (in the converted row)")
            for p in check_rows(raws).problems if p.line > 0]


def skipped_path_for(out_path: str | Path) -> Path:
    return Path(str(out_path) + ".skipped.jsonl")


def convert_file(in_path: str | Path, fmt: str | Format, out_path: str | Path,
                 overwrite: bool = False) -> ConvertResult:
    """Convert IN to OUT (any format `write_rows` knows). Skipped lines go to OUT.skipped.jsonl
    (one `{"where", "reason"}` per line) when there are any. OUT is not written when no record
    could be converted. Refuses to replace existing files unless `overwrite`."""
    from preftune.data.paths import check_outputs, rows_output

    out_path = Path(out_path)
    skipped_file = skipped_path_for(out_path)
    # before the (possibly long) conversion, not after it
    check_outputs([rows_output("-o", out_path), ("OUT.skipped.jsonl", skipped_file)], [("IN", in_path)],
                  force=overwrite)
    result = convert_rows(iter_raw(in_path), fmt, str(in_path))
    if result.num_rows == 0:
        raise ValueError(f"{in_path}: no rows to convert")
    if result.errors:
        shown = "\n".join(str(p) for p in result.errors[:MAX_PRINTED_SKIPS])
        more = (f"\n... and {len(result.errors) - MAX_PRINTED_SKIPS} more" if len(result.errors) > MAX_PRINTED_SKIPS
                else "")
        raise ValueError(f"{in_path}: {len(result.errors)} problem(s) stop the conversion (NaN / Infinity, or "
                         f"output `preftune data check` would reject); nothing was written:\n{shown}{more}")
    if result.records:
        write_rows(result.records, out_path, overwrite=overwrite)
    if result.skipped:
        write_rows([{"where": w, "reason": r} for w, r in result.skipped], skipped_file, overwrite=overwrite)
        result.skipped_path = skipped_file
    elif skipped_file.exists():
        # --force replaces OUT; a skipped-lines file left by an earlier run would now be wrong.
        skipped_file.unlink()
    return result


# ----------------------------------------------------------------------------- CLI

def register(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert HH-RLHF, TRL, UltraFeedback, AlpacaEval, ShareGPT, OpenAI rows to preftune pairs",
        description="Convert preference data into preftune records. Every input line that cannot be "
                    "converted is listed as FILE:LINE: reason (and written to OUT.skipped.jsonl).")
    p.add_argument("input", metavar="IN", help=".jsonl[.gz], .json, .csv, .parquet or a saved datasets folder")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output file (format from its name)")
    p.add_argument("--from", dest="fmt", default="auto", metavar="FORMAT",
                   help=f"input format: {format_names()} (default: auto, which says what it guessed)")
    p.add_argument("--force", action="store_true", help="replace OUT (and OUT.skipped.jsonl) if they exist")
    p.set_defaults(func=run_convert)


def run_convert(args) -> int:
    fmt = Format.parse(args.fmt)
    result = convert_file(args.input, fmt, args.out, overwrite=args.force)
    for where, reason in result.skipped[:MAX_PRINTED_SKIPS]:
        print(f"{where}: {reason}", file=sys.stderr)
    if len(result.skipped) > MAX_PRINTED_SKIPS:
        print(f"... and {len(result.skipped) - MAX_PRINTED_SKIPS} more skipped lines (all in {result.skipped_path})",
              file=sys.stderr)
    for p in result.warnings[:MAX_PRINTED_SKIPS]:
        print(f"note: {p}", file=sys.stderr)
    guessed = ", guessed" if result.guessed else ""
    if not result.records:
        print(f"read {result.num_rows} rows, converted none (format: {result.detected_format}{guessed}); "
              f"{args.out} was not written", file=sys.stderr)
        if result.skipped_path:
            print(f"skipped lines: {result.skipped_path}", file=sys.stderr)
        return 1
    print(f"read {result.num_rows} rows, wrote {len(result.records)} records to {args.out} "
          f"(format: {result.detected_format}{guessed})")
    if result.skipped_path:
        print(f"skipped {len(result.skipped)} line(s); all listed in {result.skipped_path}")
    return 0
