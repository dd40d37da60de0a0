"""Who labels what: serving assignments and taking labels, with every refusal a 4xx that writes nothing.

Rules:
- each regular pair goes to `labels_per_pair` different raters; a slot is taken by a label or by an open
  assignment that has not expired (an abandoned one frees its slot after `assignment_ttl_s`);
- a rater's open assignment is served again (after a reload, a lost reply, or a server restart) until it
  is labelled; an expired one is served again while its pair still has a free slot;
- among pairs with free slots, the most advanced goes first (complete items early, so that agreement can
  be measured while labelling goes on), then input order; `--select` changes this (select.py);
- honeypots (pairs with a known answer) are drawn with probability `honeypot_rate` while regular work
  remains, each at most once per rater; they look like any other assignment (same fields, random id);
- the order shown is drawn per assignment (`a_is_1`) and kept with the label.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from preftune.data.records import render_text
from preftune.label.select import Select, order_free_pairs
from preftune.label.store import Assignment, Label, Meta, Pair, Principal, utcnow

CHOICES = ("a_much_better", "a_better", "tie", "b_better", "b_much_better")
SIDES = ("a", "b", "tie")
MAX_RATIONALE = 4000  # characters: a paragraph or two; longer text is refused, not cut
_RNG = secrets.SystemRandom()


class ApiError(Exception):
    """A refused request: HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def lock_assignments(s: Session) -> None:
    """Serialise assignment: SQLite already holds the write lock (BEGIN IMMEDIATE, store.py); elsewhere the
    lock row is taken FOR UPDATE, so two raters asking at once never both get a pair's last slot."""
    if s.get_bind().dialect.name != "sqlite":
        s.execute(select(Meta).where(Meta.key == "lock").with_for_update())


def _taken(now: datetime):
    """pair_id -> slots taken (labels and live open assignments), as a subquery."""
    live = or_(Assignment.done.is_(True), Assignment.expires_at > now)
    return (select(Assignment.pair_id, func.count(Assignment.id).label("n"))
            .where(live).group_by(Assignment.pair_id).subquery())


def _free_pairs(s: Session, rater: Principal, settings: dict, now: datetime):
    """Regular pairs this rater has never been given that have a free slot, in the order of `--select`."""
    taken = _taken(now)
    mine = select(Assignment.pair_id).where(Assignment.rater_id == rater.id)
    n = func.coalesce(taken.c.n, 0)
    q = (select(Pair).outerjoin(taken, taken.c.pair_id == Pair.id)
         .where(Pair.gold.is_(None), Pair.id.not_in(mine), n < settings["labels_per_pair"]))
    return order_free_pairs(q, settings.get("select", Select.ORDER), n)


def _payload(a: Assignment, pair: Pair, rubric: list[str]) -> dict:
    first, second = (pair.response_1, pair.response_2) if a.a_is_1 else (pair.response_2, pair.response_1)
    return {"assignment_id": a.id, "prompt": render_text(pair.prompt), "response_a": render_text(first),
            "response_b": render_text(second), "rubric": list(rubric)}


def _reserve(s: Session, rater: Principal, pair: Pair, ttl: int, now: datetime) -> Assignment:
    a = Assignment(id=secrets.token_hex(16), pair_id=pair.id, rater_id=rater.id, a_is_1=bool(_RNG.random() < 0.5),
                   served_at=now, expires_at=now + timedelta(seconds=ttl), done=False)
    s.add(a)
    return a


def _reopen(s: Session, a: Assignment, settings: dict, now: datetime) -> bool:
    """Serve a rater's open assignment again: live ones always; an expired one while its pair has a free
    slot (its expiry renewed), else it is dropped."""
    if a.expires_at > now:
        return True
    pair = s.get(Pair, a.pair_id)
    others = s.scalar(select(func.count(Assignment.id)).where(
        Assignment.pair_id == a.pair_id, Assignment.id != a.id,
        or_(Assignment.done.is_(True), Assignment.expires_at > now))) or 0
    if pair.gold is not None or others < settings["labels_per_pair"]:
        a.expires_at = now + timedelta(seconds=settings["assignment_ttl_s"])
        return True
    s.delete(a)
    return False


def next_assignment(s: Session, rater: Principal, settings: dict) -> dict | None:
    """The rater's next assignment as the API returns it, or None when nothing is left for them."""
    lock_assignments(s)
    now = utcnow()
    ttl, rubric = settings["assignment_ttl_s"], settings["rubric"]
    current = s.scalar(select(Assignment).where(Assignment.rater_id == rater.id, Assignment.done.is_(False))
                       .order_by(Assignment.served_at))
    if current is not None and _reopen(s, current, settings, now):
        return _payload(current, s.get(Pair, current.pair_id), rubric)
    s.flush()
    pair = s.scalars(_free_pairs(s, rater, settings, now).limit(1)).first()
    if pair is None:
        return None
    if settings["honeypot_rate"] > 0 and _RNG.random() < settings["honeypot_rate"]:
        mine = select(Assignment.pair_id).where(Assignment.rater_id == rater.id)
        golds = s.scalars(select(Pair.id).where(Pair.gold.is_not(None), Pair.id.not_in(mine))).all()
        if golds:
            pair = s.get(Pair, _RNG.choice(golds))
    return _payload(_reserve(s, rater, pair, ttl, now), pair, rubric)


def submit_label(s: Session, rater: Principal, settings: dict, body: dict) -> int:
    """Store one label; ApiError (and nothing written) for anything wrong. Returns the label's id."""
    now = utcnow()
    a = s.get(Assignment, body["assignment_id"])
    if a is None:
        raise ApiError(404, f"unknown assignment {body['assignment_id']!r}; ask GET /api/next for one")
    if a.rater_id != rater.id:
        raise ApiError(403, f"assignment {a.id!r} was given to another rater; label your own (GET /api/next)")
    if a.done:
        raise ApiError(409, f"assignment {a.id!r} is already labelled; a label cannot be submitted twice")
    if a.expires_at <= now:
        raise ApiError(410, f"assignment {a.id!r} expired (open for more than {settings['assignment_ttl_s']} s); "
                            "ask GET /api/next again")
    unknown = sorted(set(body["attributes"]) - set(settings["rubric"]))
    if unknown:
        raise ApiError(422, f"attributes: unknown dimension(s) {', '.join(unknown)}; the rubric has "
                            f"{', '.join(settings['rubric'])}")
    a.done = True
    label = Label(assignment_id=a.id, pair_id=a.pair_id, rater_id=rater.id, choice=body["choice"],
                  attributes=dict(body["attributes"]), rationale=body["rationale"], a_is_1=a.a_is_1,
                  seconds=max(0.0, (now - a.served_at).total_seconds()), created_at=now)
    s.add(label)
    try:
        s.flush()
    except IntegrityError:  # a replay racing the first submission on a database without BEGIN IMMEDIATE
        raise ApiError(409, f"assignment {a.id!r} is already labelled; a label cannot be submitted twice") from None
    return label.id


def progress(s: Session, rater: Principal, settings: dict) -> dict:
    """{labelled, remaining}: this rater's labels, and the regular pairs still open to them (an estimate:
    other raters may fill the slots first; honeypots not counted)."""
    now = utcnow()
    done = s.scalar(select(func.count(Label.id)).where(Label.rater_id == rater.id)) or 0
    free = s.scalar(select(func.count()).select_from(
        _free_pairs(s, rater, settings, now).subquery())) or 0
    open_now = s.scalar(select(func.count(Assignment.id)).where(and_(
        Assignment.rater_id == rater.id, Assignment.done.is_(False)))) or 0
    return {"labelled": done, "remaining": free + open_now}
