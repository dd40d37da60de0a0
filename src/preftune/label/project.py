"""`label init`: read the candidate pairs (and honeypots) with preftune's readers and create a project."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, inspect, select

from preftune.data.records import PairRecord, RatedRecord
from preftune.label.store import (
    ADMIN,
    DEFAULT_RUBRIC,
    MAX_ITEM_ID,
    NAME_RE,
    Base,
    Meta,
    Pair,
    Principal,
    add_principal,
    db_url,
    make_engine,
    sessions,
)

GOLD_VALUES = ("chosen", "rejected", "tie")


@dataclass
class InitResult:
    num_pairs: int
    num_honeypots: int
    tokens: dict[str, str]  # rater name -> token
    admin_token: str


def read_pairs(path: str, fmt: str = "preftune") -> list[tuple[str, PairRecord]]:
    """(FILE:LINE, pair) of every pair in a file. Native rows go through `read_located` (any bad row stops
    it, with FILE:LINE: field: message); rated rows become their pairs; other formats go through the
    converters of `data convert`, and a row they would skip is an error here (nothing is dropped)."""
    from preftune.data.convert import convert_rows
    from preftune.data.io import iter_raw, read_located

    out: list[tuple[str, PairRecord]] = []
    if fmt == "preftune":
        for line, rec in read_located(path):
            where = f"{path}:{line}"
            if isinstance(rec, RatedRecord):  # each pair of completions is an item (ids ID:a>b, or FILE:LINE:a>b)
                for p in rec.to_pairs():
                    p.id = p.id or f"{Path(path).name}:{line}:{len(out)}"
                    out.append((where, p))
            elif isinstance(rec, PairRecord):
                out.append((where, rec))
            else:
                raise ValueError(  # noqa: TRY004
                    f"{where}: row: is an unpaired row (prompt/completion/label); labelling needs "
                    "pairs (prompt/chosen/rejected) or rated rows (prompt/completions/scores)")
        return out
    result = convert_rows(iter_raw(path), fmt, path)
    problems = [f"{w}: {r}" for w, r in result.skipped] + [str(p) for p in result.errors]
    if problems:
        raise ValueError(f"{path}: {len(problems)} row(s) could not be converted from {fmt}; nothing was loaded:\n"
                         + "\n".join(problems[:20]))
    for rec, (p, line) in zip(result.records, result.origins):
        if not isinstance(rec, PairRecord):
            raise ValueError(f"{p}:{line}: row: converts to an unpaired row; labelling needs pairs")  # noqa: TRY004
        out.append((f"{p}:{line}", rec))
    return out


def _gold_of(where: str, rec: PairRecord) -> str:
    """The known answer of a honeypot as "1" (its `chosen` is better), "2" or "tie": its `gold` field when it
    has one, else the file's chosen is the better response."""
    gold = rec.extra.get("gold", "chosen")
    if gold not in GOLD_VALUES:
        raise ValueError(f"{where}: gold: must be one of {', '.join(GOLD_VALUES)}, got {gold!r}")
    return {"chosen": "1", "rejected": "2", "tie": "tie"}[gold]


def _pair_rows(items: list[tuple[str, PairRecord]], honeypot: bool, seen: dict[str, str]) -> list[Pair]:
    rows = []
    for where, rec in items:
        item = rec.id if rec.id is not None else where.rsplit("/", 1)[-1]
        if len(item) > MAX_ITEM_ID:
            raise ValueError(f"{where}: id: is {len(item)} characters long; at most {MAX_ITEM_ID} are kept")
        if item in seen:
            raise ValueError(f"{where}: id: {item!r} is also the id of {seen[item]}; every item needs its own id")
        seen[item] = where
        rows.append(Pair(item=item, prompt=rec.prompt, response_1=rec.chosen, response_2=rec.rejected,
                         category=rec.category, source=rec.source, where=where,
                         gold=_gold_of(where, rec) if honeypot else None))
    return rows


def rater_names(spec: list[str] | None) -> list[str]:
    """`--raters 3` -> rater-1..rater-3; `--raters alice bob` -> those names."""
    if not spec:
        return []
    if len(spec) == 1 and spec[0].isdigit():
        return [f"rater-{i}" for i in range(1, int(spec[0]) + 1)]
    for name in spec:
        if not NAME_RE.match(name):
            raise ValueError(f"--raters: {name!r} is not a valid name (letters, digits, '.', '_', '-')")
    if len(set(spec)) != len(spec):
        raise ValueError("--raters: a name is given twice")
    return list(spec)


def read_rubric(path: str | None) -> list[str]:
    """Dimensions of the per-dimension verdicts: one per line of FILE (`#` starts a comment), or the default."""
    if path is None:
        return list(DEFAULT_RUBRIC)
    dims = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not NAME_RE.match(name) or name in dims:
            raise ValueError(f"{path}:{i}: dimension {name!r} is not a valid name or is repeated")
        dims.append(name)
    if not dims:
        raise ValueError(f"{path}: names no dimension")
    return dims


def init_project(db: str, pairs: str, *, raters: list[str], per_pair: int = 2, honeypots: str | None = None,
                 honeypot_rate: float = 0.1, rubric: list[str] | None = None, assignment_ttl_s: int = 3600,
                 fmt: str = "preftune", force: bool = False) -> InitResult:
    """Create the tables, load the pairs and honeypots, make raters and an admin token. Every input is read
    and checked before the database is touched; an existing project is refused without `force`
    (which drops it)."""
    if per_pair < 1:
        raise ValueError(f"--per-pair must be at least 1, got {per_pair}")
    if not 0.0 <= honeypot_rate <= 1.0:
        raise ValueError(f"--honeypot-rate must be in [0, 1], got {honeypot_rate:g}")
    if assignment_ttl_s < 1:
        raise ValueError(f"--assignment-ttl must be at least 1 second, got {assignment_ttl_s}")
    seen: dict[str, str] = {}
    rows = _pair_rows(read_pairs(pairs, fmt), False, seen)
    gold_rows = _pair_rows(read_pairs(honeypots, fmt), True, seen) if honeypots else []
    if db_url(db).startswith("sqlite:///"):
        Path(db_url(db).removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db, must_exist=False)
    try:
        if inspect(engine).has_table("meta"):
            if not force:
                raise ValueError(f"--db {db} already holds a labelling project; pass --force to replace it "
                                 "(its labels are lost) or add raters with `preftune label raters add`")
            Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with sessions(engine).begin() as s:
            meta = {"labels_per_pair": per_pair, "honeypot_rate": honeypot_rate if gold_rows else 0.0,
                    "rubric": rubric or list(DEFAULT_RUBRIC), "assignment_ttl_s": assignment_ttl_s,
                    "pairs_file": str(pairs), "honeypots_file": str(honeypots) if honeypots else None}
            s.add_all([Meta(key=k, value=v) for k, v in meta.items()] + [Meta(key="lock", value=0)])
            s.add_all(rows + gold_rows)
            tokens = {name: add_principal(s, name) for name in raters}
            admin = add_principal(s, f"{ADMIN}-1", role=ADMIN)
    finally:
        engine.dispose()
    return InitResult(len(rows), len(gold_rows), tokens, admin)


def add_raters(db: str, names: list[str]) -> dict[str, str]:
    engine = make_engine(db)
    try:
        with sessions(engine).begin() as s:
            return {name: add_principal(s, name) for name in names}
    finally:
        engine.dispose()


def new_admin_token(db: str) -> str:
    engine = make_engine(db)
    try:
        with sessions(engine).begin() as s:
            if s.scalar(select(Meta).where(Meta.key == "labels_per_pair")) is None:
                raise ValueError(f"--db {db} holds no labelling project")
            num = s.scalar(select(func.count(Principal.id)).where(Principal.role == ADMIN)) or 0
            return add_principal(s, f"{ADMIN}-{num + 1}", role=ADMIN)
    finally:
        engine.dispose()
