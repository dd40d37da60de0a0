"""`label serve --select`: the acquisition value against hand-computed entropies, and the pair served next
under each mode on a project whose labels and priorities are set by hand."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient
from label_support import make_project, pair_rows
from sqlalchemy import select

from preftune.label.app import create_app
from preftune.label.select import Select, preference_entropy, score_uncertainty
from preftune.label.store import Assignment, Pair, make_engine, sessions

CHOSEN = {r["id"]: r["chosen"] for r in pair_rows(10)}


def test_preference_entropy_hand_values():
    assert preference_entropy([0.0]) == pytest.approx(math.log(2))  # margin 0: p = 1/2
    # members disagree (+2, -2): p = (0.880797 + 0.119203) / 2 = 1/2 -> the maximum, ln 2
    assert preference_entropy([2.0, -2.0]) == pytest.approx(math.log(2))
    # members agree (+2, +2): p = 0.880797; H = -(p ln p + (1-p) ln(1-p)) = 0.365334
    assert preference_entropy([2.0, 2.0]) == pytest.approx(0.365334, abs=1e-6)
    # (+3, +1): p = (0.952574 + 0.731059) / 2 = 0.841817; H = 0.436646
    assert preference_entropy([3.0, 1.0]) == pytest.approx(0.436646, abs=1e-6)
    with pytest.raises(ValueError, match="use one of order, disagreement, uncertainty"):
        Select.parse("random")


def _item(db, aid: str) -> str:
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        item = s.get(Pair, s.get(Assignment, aid).pair_id).item
    engine.dispose()
    return item


def _label_as(client, db, token: str, want: dict[str, str]) -> None:
    """Label every pair the rater is served: "1" = the input's chosen, "2" = its rejected."""
    head = {"Authorization": f"Bearer {token}"}
    while (r := client.get("/api/next", headers=head)).status_code == 200:
        item = r.json()
        a_is_1 = item["response_a"] == CHOSEN[_item(db, item["assignment_id"])]
        side = "a" if (want[_item(db, item["assignment_id"])] == "1") == a_is_1 else "b"
        assert client.post("/api/labels", json={"assignment_id": item["assignment_id"], "choice": f"{side}_better"},
                           headers=head).status_code == 201


@pytest.mark.parametrize("mode, first", [("order", "p0"), ("disagreement", "p1")])
def test_disagreement_serves_the_split_pair_first(tmp_path, mode, first):
    db, tokens, _ = make_project(tmp_path, num_pairs=3, raters=("alice", "bob", "carol"), per_pair=3)
    with TestClient(create_app(str(db), mode)) as client:
        _label_as(client, db, tokens["alice"], {"p0": "1", "p1": "1", "p2": "1"})
        _label_as(client, db, tokens["bob"], {"p0": "1", "p1": "2", "p2": "1"})  # they split on p1 only
        got = client.get("/api/next", headers={"Authorization": f"Bearer {tokens['carol']}"}).json()
    assert _item(db, got["assignment_id"]) == first


@pytest.mark.parametrize("mode, first", [("order", "p0"), ("uncertainty", "p2")])
def test_uncertainty_serves_the_highest_priority_first(tmp_path, mode, first):
    db, tokens, _ = make_project(tmp_path, num_pairs=3, raters=("alice",), per_pair=1)
    engine = make_engine(str(db))
    with sessions(engine).begin() as s:
        for pair, prio in zip(s.scalars(select(Pair).order_by(Pair.id)), (0.1, 0.3, 0.69)):
            pair.priority = prio
    engine.dispose()
    with TestClient(create_app(str(db), mode)) as client:
        head = {"Authorization": f"Bearer {tokens['alice']}"}
        order = []
        while (r := client.get("/api/next", headers=head)).status_code == 200:
            order.append(_item(db, r.json()["assignment_id"]))
            client.post("/api/labels", json={"assignment_id": r.json()["assignment_id"], "choice": "tie"}, headers=head)
    assert order == ([first, "p1", "p0"] if mode == "uncertainty" else ["p0", "p1", "p2"])


def test_score_uncertainty_with_a_reward_model(tmp_path):
    db, _, _ = make_project(tmp_path, num_pairs=3, raters=("alice",), per_pair=1, num_gold=1, honeypot_rate=0.5)
    engine = make_engine(str(db))
    with sessions(engine).begin() as s:
        assert score_uncertainty(s, "tiny-bert") == 3  # regular pairs only
    with sessions(engine)() as s:
        prios = {p.item: p.priority for p in s.scalars(select(Pair))}
    engine.dispose()
    assert prios["g0"] is None
    assert all(0.0 < prios[k] <= math.log(2) + 1e-12 for k in ("p0", "p1", "p2"))
