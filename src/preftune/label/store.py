"""The labelling project's database: SQLAlchemy models, the engine, tokens, and loading pairs.

One project per database. `--db` is any SQLAlchemy URL (`postgresql://...`); a plain path is a SQLite file,
opened in WAL mode with `synchronous=FULL` (an acknowledged label survives a crash of the process and of the
machine) and every transaction started with `BEGIN IMMEDIATE`, so that two raters asking for work at the same
moment are served one after the other (no pair handed to K+1 raters). Other databases get the same
serialisation from a row lock (`SELECT ... FOR UPDATE` on the lock row, see `assign.lock_assignments`).

Tokens are stored as SHA-256 hashes: a token is 32 random bytes, so a plain hash (no salt, no slow KDF) is
enough to make a stolen database useless for logging in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

DEFAULT_RUBRIC = ("helpfulness", "harmlessness", "honesty", "style")
MAX_ITEM_ID = 200  # characters of an item's id (the column's size on databases that enforce it)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADMIN = "admin"  # the role of admin tokens (a role, not a rater name: rater names cannot clash with it)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC: SQLite keeps no time zone


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Project settings (labels_per_pair, honeypot_rate, rubric, assignment_ttl_s) and the lock row."""
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict | list | str | int | float | None] = mapped_column(JSON)


class Pair(Base):
    """One item to label: a prompt and two responses, kept in the input's order (response_1 = the input's
    `chosen`). A honeypot has `gold`: "1", "2" (that response is better) or "tie"."""
    __tablename__ = "pairs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item: Mapped[str] = mapped_column(String(MAX_ITEM_ID), unique=True)
    prompt: Mapped[list] = mapped_column(JSON)
    response_1: Mapped[list] = mapped_column(JSON)
    response_2: Mapped[list] = mapped_column(JSON)
    category: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str | None] = mapped_column(String(200))
    gold: Mapped[str | None] = mapped_column(String(4))
    where: Mapped[str] = mapped_column(Text)  # FILE:LINE it was read from
    priority: Mapped[float | None] = mapped_column(Float)  # `serve --select uncertainty`: higher is served first


class Principal(Base):
    """Who holds a token: a rater (role "rater", with a name) or an admin."""
    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    __table_args__ = (UniqueConstraint("role", "name"),)


class Assignment(Base):
    """A pair served to a rater; `a_is_1` is the order shown (response_1 on the left as A)."""
    __tablename__ = "assignments"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # random: not guessable, not ordered
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    a_is_1: Mapped[bool] = mapped_column(Boolean)
    served_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (UniqueConstraint("pair_id", "rater_id"),)  # a rater never sees a pair twice


class Label(Base):
    """One submitted label. `assignment_id` is unique: a replayed submission cannot write a second row."""
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[str] = mapped_column(ForeignKey("assignments.id"), unique=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    choice: Mapped[str] = mapped_column(String(16))  # as submitted, relative to the order shown
    attributes: Mapped[dict] = mapped_column(JSON)   # dimension -> "a" | "b" | "tie", as shown
    rationale: Mapped[str] = mapped_column(Text, default="")
    a_is_1: Mapped[bool] = mapped_column(Boolean)
    seconds: Mapped[float] = mapped_column(Float)    # served -> submitted
    created_at: Mapped[datetime] = mapped_column(DateTime)


def db_url(db: str) -> str:
    """A SQLAlchemy URL as given, or a path made into a SQLite URL."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().absolute()}"


def _sqlite_setup(engine: Engine) -> None:
    # The pysqlite recipe from SQLAlchemy's docs: take transactions away from the driver so that each one can
    # start with BEGIN IMMEDIATE (the write lock at once, so concurrent assigners queue instead of deadlocking).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # read-only sessions (`read_sessions`: token checks, stats, export) need no write lock
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("preftune_read") else "BEGIN IMMEDIATE")


def make_engine(db: str, *, must_exist: bool = True) -> Engine:
    """The engine of a project database. `must_exist`: a SQLite file that is missing is an error (a typo in
    --db would otherwise start an empty project)."""
    url = db_url(db)
    if url.startswith("sqlite:///") and must_exist:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise ValueError(f"{path}: no such database; create it with `preftune label init --db {db} --pairs FILE`")
    try:
        engine = create_engine(url, connect_args={"check_same_thread": False} if url.startswith("sqlite") else {})
    except Exception as e:  # noqa: BLE001 (SQLAlchemy raises several types for a bad URL; the user sees one line)
        raise ValueError(f"--db {db}: not a usable database URL ({e})") from None
    if engine.dialect.name == "sqlite":
        _sqlite_setup(engine)
    return engine


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions that only read: on SQLite they start with a plain BEGIN (a snapshot, no write lock)."""
    return sessionmaker(engine.execution_options(preftune_read=True), expire_on_commit=False)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def add_principal(s: Session, name: str, role: str = "rater") -> str:
    """Create a rater (or admin) and return its token (shown once; only its hash is kept)."""
    if role == "rater" and not NAME_RE.match(name):
        raise ValueError(f"rater name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                         "or digit")
    if role == "rater" and s.scalar(select(Principal).where(Principal.role == "rater", Principal.name == name)):
        raise ValueError(f"rater {name!r} already exists")
    token = new_token()
    s.add(Principal(name=name, role=role, token_hash=hash_token(token)))
    return token


def principal_for(s: Session, token: str) -> Principal | None:
    return s.scalar(select(Principal).where(Principal.token_hash == hash_token(token)))


def settings(s: Session) -> dict:
    return {m.key: m.value for m in s.scalars(select(Meta)) if m.key != "lock"}


def count_labels(s: Session) -> int:
    return s.scalar(select(func.count(Label.id))) or 0
