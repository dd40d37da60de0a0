"""Read and write preference rows: JSONL (optionally .gz), JSON (array or {"data": [...]}), CSV,
Parquet, and a `datasets` folder saved with `save_to_disk`.

Every row keeps a location for error messages: the line number in JSONL/CSV files, the 1-based
row index elsewhere. Readers never drop a row silently: unreadable rows come back as errors.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.data.records import Record, parse_row

FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")
# CSV cells holding JSON (lists of messages, objects) are decoded when they parse as a list/object.
_JSON_CELL_START = ("[", "{")


@dataclass
class RawRow:
    """One row as read, with where it came from. `error` is set (and `row` None) when unreadable."""
    path: str
    line: int
    row: Any = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        return "datasets"
    name = p.name.lower()
    name = name.removesuffix(".gz")
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv"),
                     (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(ext):
            return fmt
    raise ValueError(f"{path}: cannot tell the format from the name; use one of .jsonl .json .csv .parquet "
                     "(optionally .gz for jsonl/json/csv) or a datasets folder")


def _open_binary(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _not_utf8(p: Path, line_no: int, data: bytes, e: UnicodeDecodeError) -> ValueError:
    col = len(data[:e.start].decode("utf-8")) + 1
    return ValueError(f"{p}:{line_no}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col}); "
                      "save the file as UTF-8")


class _Lines:
    """The decoded lines of a text file (gzip when named .gz), each with its 1-based number.

    Decoded as UTF-8 one line at a time, so that a bad byte is named with its line; a leading
    byte-order mark (Excel writes one) is dropped, so the first CSV header is not '\ufeffprompt'.
    A truncated or damaged gzip stream, or a .gz that is not gzip, is a ValueError naming the file."""

    def __init__(self, p: Path) -> None:
        self.p = p
        self.line_no = 0

    def __iter__(self) -> Iterator[str]:
        try:
            with _open_binary(self.p) as f:
                for data in f:
                    self.line_no += 1
                    if self.line_no == 1 and data.startswith(codecs.BOM_UTF8):
                        data = data[len(codecs.BOM_UTF8):]
                    try:
                        yield data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise _not_utf8(self.p, self.line_no, data, e) from None
        except EOFError:
            raise ValueError(f"{self.p}: the gzip stream ends early, after line {self.line_no} (a truncated "
                             "or incomplete file); nothing past that line could be read") from None
        except (gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{self.p}: not a valid gzip file ({e}); a name ending in .gz means gzip") from None


def _read_text(p: Path) -> str:
    """The whole text of a file, with the same decoding and errors as `_Lines`."""
    return "".join(_Lines(p))


_CSV_NUMBER_FIELDS = ("confidence", "margin")
_CONVERSATION_FIELDS = ("prompt", "chosen", "rejected", "completion", "completions", "messages")


def _decode_cell(key: str, v: Any) -> Any:
    """CSV cells are text: decode JSON lists/objects, booleans, and the numeric metadata fields."""
    if key in _CSV_NUMBER_FIELDS and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    if isinstance(v, str) and v[:1] in _JSON_CELL_START:
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def _from_arrow_value(v: Any) -> Any:
    # Arrow fills absent struct fields with None; drop them so rows look like the JSON they came from.
    if isinstance(v, dict):
        return {k: _from_arrow_value(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_from_arrow_value(x) for x in v]
    return v


def _from_arrow_row(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if v is None:
            continue
        v = _from_arrow_value(v)
        if k in _CONVERSATION_FIELDS and isinstance(v, str) and v.startswith("[{"):
            try:  # a column that mixed text and messages was stored as JSON text (see _columns)
                decoded = json.loads(v)
                v = decoded if isinstance(decoded, list) else v
            except json.JSONDecodeError:
                pass
        out[k] = v
    return out


def _json_row(sp: str, line_no: int, line: str) -> RawRow:
    try:
        return RawRow(sp, line_no, json.loads(line))
    except json.JSONDecodeError as e:
        return RawRow(sp, line_no, error=f"json: invalid JSON ({e.msg} at column {e.colno})")
    except ValueError as e:  # an integer of more than 4300 digits (Python's int-to-str limit)
        return RawRow(sp, line_no, error=f"json: unreadable number ({e})")


def _json_rows(sp: str, text: str) -> Iterator[RawRow]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield RawRow(sp, e.lineno, error=f"json: invalid JSON ({e.msg} at column {e.colno})")
        return
    except ValueError as e:
        yield RawRow(sp, 1, error=f"json: unreadable number ({e})")
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        yield RawRow(sp, 1, error="json: a .json file must hold an array of rows (or {\"data\": [...]})")
        return
    for i, row in enumerate(data, start=1):
        yield RawRow(sp, i, row)


def _csv_rows(sp: str, lines: Iterable[str]) -> Iterator[RawRow]:
    reader = csv.DictReader(lines)
    for row in reader:
        extra = row.pop(None, None)  # DictReader's restkey: cells beyond the header
        if extra:
            shown = ", ".join(repr(c[:30]) for c in extra[:3]) + (", ..." if len(extra) > 3 else "")
            yield RawRow(sp, reader.line_num, error=f"row: {len(extra)} cell(s) beyond the {len(reader.fieldnames)} "
                                                    f"columns of the header ({shown}); quote cells that hold commas")
            continue
        clean = {k: _decode_cell(k, v) for k, v in row.items() if v not in (None, "")}
        yield RawRow(sp, reader.line_num, clean)


def iter_raw(path: str | Path) -> Iterator[RawRow]:
    """Every row of a file, in order, each with its line (or row number) and any read error."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder")
    fmt = detect_format(p)
    sp = str(p)
    if fmt == "jsonl":
        for line_no, line in enumerate(_Lines(p), start=1):
            if line.strip():
                yield _json_row(sp, line_no, line)
    elif fmt == "json":
        yield from _json_rows(sp, _read_text(p))
    elif fmt == "csv":
        yield from _csv_rows(sp, _Lines(p))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{p}: not a readable Parquet file ({e})") from None
        for i, row in enumerate(table.to_pylist(), start=1):
            yield RawRow(sp, i, _from_arrow_row(row))
    else:
        try:
            import datasets
        except ImportError as e:
            raise ValueError(f"{p} is a folder; reading a saved `datasets` folder needs: pip install datasets") from e
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"{p} holds several splits ({', '.join(ds)}); give the folder of one split")
        for i, row in enumerate(ds, start=1):
            yield RawRow(sp, i, _from_arrow_row(row))


def read_records(path: str | Path, max_errors: int = 20) -> list[Record]:
    """All rows of a file as records. Any bad row is an error: ValueError listing up to `max_errors`
    problems as `FILE:LINE: field: message` (run `preftune data check` for the full list)."""
    return [rec for _, rec in read_located(path, max_errors)]


def read_located(path: str | Path, max_errors: int = 20) -> list[tuple[int, Record]]:
    """`read_records` with each record's line (or row number), for errors that name it."""
    records: list[tuple[int, Record]] = []
    problems: list[str] = []
    num_bad = 0
    for raw in iter_raw(path):
        if raw.error is not None:
            num_bad += 1
            problems.append(f"{raw.where}: {raw.error}")
            continue
        rec, probs = parse_row(raw.row)
        if probs:
            num_bad += 1
            problems.extend(f"{raw.where}: {pr}" for pr in probs)
        else:
            records.append((raw.line, rec))
    if num_bad:
        shown = "\n".join(problems[:max_errors])
        more = f"\n... and {len(problems) - max_errors} more" if len(problems) > max_errors else ""
        raise ValueError(f"{path}: {num_bad} bad row(s); nothing was loaded. Run `preftune data check {path}` "
                         f"for every problem.\n{shown}{more}")
    if not records:
        raise ValueError(f"{path}: no rows")
    return records


def _as_dict(r: Any) -> dict:
    return r.to_dict() if hasattr(r, "to_dict") else dict(r)


def write_rows(rows: Iterable[Any], path: str | Path, overwrite: bool = False) -> int:
    """Write records or dicts; the format follows the name. Refuses to replace an existing file
    unless `overwrite`. Writes a temporary sibling first and renames it, so a failure leaves no
    partial file; JSON output refuses NaN / Infinity (not JSON). Returns the number of rows written."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise ValueError(f"{p} already exists; pass --force (overwrite=True) to replace it")
    dicts = [_as_dict(r) for r in rows]
    fmt = detect_format(p) if not (p.suffix == "" and not p.exists()) else "datasets"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    try:
        _write(dicts, fmt, tmp, p)
    except BaseException:
        _remove(tmp)
        raise
    tmp.replace(p) if not tmp.is_dir() else (_replace_dir(tmp, p))
    return len(dicts)


def _json_text(d: dict, where: str) -> str:
    try:
        return json.dumps(d, ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN or Infinity: the validators reject them; never write invalid JSON
        raise ValueError(f"{where}: holds a non-finite number (NaN or Infinity), which JSON cannot hold; "
                         "nothing was written") from e


def _write(dicts: list[dict], fmt: str, tmp: Path, p: Path) -> None:
    if fmt == "jsonl":
        gz = p.name.endswith(".gz")
        with gzip.open(tmp, "wt", encoding="utf-8") if gz else open(tmp, "w", encoding="utf-8") as f:
            for i, d in enumerate(dicts, start=1):
                f.write(_json_text(d, f"{p}: row {i}") + "\n")
        return
    for i, d in enumerate(dicts, start=1):  # every format: no row a reader would refuse
        _json_text(d, f"{p}: row {i}")
    if fmt == "json":
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dicts, f, ensure_ascii=False, indent=1)
    elif fmt == "csv":
        keys: list[str] = []
        for d in dicts:
            keys.extend(k for k in d if k not in keys)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for d in dicts:
                w.writerow({k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict, bool)) else v)
                            for k, v in d.items()})
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Columns whose values differ in shape (string vs list of messages) are stored as JSON text.
        pq.write_table(pa.Table.from_pydict(_columns(dicts)), tmp)
    else:
        import datasets

        datasets.Dataset.from_dict(_columns(dicts)).save_to_disk(str(tmp))


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _replace_dir(tmp: Path, p: Path) -> None:
    import shutil

    if p.exists():
        shutil.rmtree(p)
    tmp.rename(p)


def _columns(dicts: list[dict]) -> dict[str, list]:
    """Column lists over the union of keys (Arrow infers each column's type from all its values;
    `from_pylist` would take the schema from the first row and lose keys that appear later).
    Arrow needs one type per column: a column mixing text and lists/objects is stored as JSON text
    and decoded again on reading."""
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    cols = {k: [d.get(k) for d in dicts] for k in keys}
    for k, vals in cols.items():
        if any(isinstance(v, str) for v in vals) and any(isinstance(v, (list, dict)) for v in vals):
            cols[k] = [json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for v in vals]
    return cols
