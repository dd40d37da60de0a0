"""The labelling API through FastAPI's TestClient: assignment rules, every refusal (status code AND no row
written), the export's mapping from shown sides to chosen/rejected, and the admin numbers against hand-computed
values."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from label_support import make_project, pair_rows
from sqlalchemy import select

from preftune.label.app import create_app
from preftune.label.export import export_rows
from preftune.label.store import Assignment, Label, Pair, count_labels, make_engine, sessions

CHOSEN_TEXT = {r["id"]: r["chosen"] for r in pair_rows(10)} | {r["id"]: r["chosen"] for r in pair_rows(10, "g")}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def n_labels(db) -> int:
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        n = count_labels(s)
    engine.dispose()
    return n


def item_of(db, assignment_id: str) -> Pair:
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        a = s.get(Assignment, assignment_id)
        pair = s.get(Pair, a.pair_id)
    engine.dispose()
    return pair


def choice_for(db, payload: dict, want: str, strength: str = "better") -> str:
    """The five-way choice that says `want` ("1": the input's chosen, "2": its rejected, "tie") given the
    order this assignment shows."""
    if want == "tie":
        return "tie"
    pair = item_of(db, payload["assignment_id"])
    a_is_1 = payload["response_a"] == CHOSEN_TEXT[pair.item]
    side = "a" if (want == "1") == a_is_1 else "b"
    return f"{side}_{strength}"


@pytest.fixture
def project(tmp_path):
    db, tokens, admin = make_project(tmp_path, num_pairs=4, raters=("alice", "bob", "carol"), per_pair=2)
    with TestClient(create_app(str(db))) as client:
        yield db, tokens, admin, client


def label(client, token, payload, choice="a_better", **extra):
    body = {"assignment_id": payload["assignment_id"], "choice": choice, "attributes": {}, "rationale": ""} | extra
    return client.post("/api/labels", json=body, headers=bearer(token))


def test_next_has_the_documented_fields_and_is_served_again_until_labelled(project):
    db, tokens, _, client = project
    r = client.get("/api/next", headers=bearer(tokens["alice"]))
    assert r.status_code == 200
    item = r.json()
    assert set(item) == {"assignment_id", "prompt", "response_a", "response_b", "rubric"}
    assert item["rubric"] == ["helpfulness", "harmlessness", "honesty", "style"]
    pair = item_of(db, item["assignment_id"])
    assert {item["response_a"], item["response_b"]} == {pair.response_1[0]["content"], pair.response_2[0]["content"]}
    again = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    assert again == item  # an open assignment is served again (reload, lost reply, restart)
    assert label(client, tokens["alice"], item).status_code == 201
    assert client.get("/api/next", headers=bearer(tokens["alice"])).json()["assignment_id"] != item["assignment_id"]


def test_each_pair_goes_to_k_different_raters_then_204(project):
    db, tokens, _, client = project
    for rater in ("alice", "bob", "carol"):
        while (r := client.get("/api/next", headers=bearer(tokens[rater]))).status_code == 200:
            assert label(client, tokens[rater], r.json()).status_code == 201
        assert r.status_code == 204 and r.content == b""
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        by_pair: dict[int, list[int]] = {}
        for lab in s.scalars(select(Label)):
            by_pair.setdefault(lab.pair_id, []).append(lab.rater_id)
    engine.dispose()
    assert len(by_pair) == 4
    assert all(len(v) == 2 and len(set(v)) == 2 for v in by_pair.values())  # K = 2, two different raters each
    assert n_labels(db) == 8


# ---------------------------------------------------------------- refusals: status code and nothing written

def test_unknown_assignment_is_404(project):
    db, tokens, _, client = project
    r = label(client, tokens["alice"], {"assignment_id": "no-such-id"})
    assert r.status_code == 404 and "unknown assignment" in r.json()["detail"]
    assert n_labels(db) == 0


def test_another_raters_assignment_is_403(project):
    db, tokens, _, client = project
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    r = label(client, tokens["bob"], item)
    assert r.status_code == 403 and "another rater" in r.json()["detail"]
    assert n_labels(db) == 0


def test_replayed_submission_is_409(project):
    db, tokens, _, client = project
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    assert label(client, tokens["alice"], item).status_code == 201
    r = label(client, tokens["alice"], item, choice="b_better")
    assert r.status_code == 409 and "already labelled" in r.json()["detail"]
    assert n_labels(db) == 1


def test_invalid_choice_is_422(project):
    db, tokens, _, client = project
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    r = label(client, tokens["alice"], item, choice="a_is_great")
    assert r.status_code == 422 and r.json()["detail"].startswith("choice:")
    assert n_labels(db) == 0


def test_oversize_rationale_is_422(project):
    db, tokens, _, client = project
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    r = label(client, tokens["alice"], item, rationale="x" * 4001)
    assert r.status_code == 422 and r.json()["detail"].startswith("rationale:")
    assert n_labels(db) == 0


def test_unknown_dimension_and_bad_verdict_are_422(project):
    db, tokens, _, client = project
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    r = label(client, tokens["alice"], item, attributes={"wit": "a"})
    assert r.status_code == 422 and "unknown dimension(s) wit" in r.json()["detail"]
    r = label(client, tokens["alice"], item, attributes={"style": "left"})
    assert r.status_code == 422 and r.json()["detail"].startswith("attributes.style:")
    assert n_labels(db) == 0


def test_expired_assignment_is_410(project):
    db, tokens, _, client = project
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    engine = make_engine(str(db))
    with sessions(engine).begin() as s:
        a = s.get(Assignment, item["assignment_id"])
        a.expires_at = a.served_at - timedelta(seconds=1)
    engine.dispose()
    r = label(client, tokens["alice"], item)
    assert r.status_code == 410 and "expired" in r.json()["detail"]
    assert n_labels(db) == 0


def test_no_token_and_wrong_token_are_401(project):
    db, _tokens, _, client = project
    body = {"assignment_id": "x", "choice": "tie"}
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        r = client.post("/api/labels", json=body, headers=headers)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
    for path in ("/api/next", "/api/labels"):
        r = (client.get if path == "/api/next" else lambda p, headers: client.post(p, json=body, headers=headers))(
            path, headers=bearer("not-a-token"))
        assert r.status_code == 401 and r.json()["detail"] == "unknown token"
    assert n_labels(db) == 0


def test_rater_token_on_admin_endpoint_is_403_and_admin_cannot_label(project):
    db, tokens, admin, client = project
    r = client.get("/api/stats", headers=bearer(tokens["alice"]))
    assert r.status_code == 403 and "admin token" in r.json()["detail"]
    item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
    r = label(client, admin, item)
    assert r.status_code == 403 and "rater token" in r.json()["detail"]
    assert n_labels(db) == 0


# ---------------------------------------------------------------- honeypots, export, stats

def test_honeypots_look_like_any_assignment_and_export_carries_gold(tmp_path):
    db, tokens, _admin = make_project(tmp_path, num_pairs=3, raters=("alice",), per_pair=1, num_gold=2,
                                      honeypot_rate=1.0)
    with TestClient(create_app(str(db))) as client:
        served = []
        while (r := client.get("/api/next", headers=bearer(tokens["alice"]))).status_code == 200:
            served.append(r.json())
            assert set(r.json()) == {"assignment_id", "prompt", "response_a", "response_b", "rubric"}
            assert "gold" not in r.text
            assert label(client, tokens["alice"], r.json(), choice=choice_for(db, r.json(), "1")).status_code == 201
    items = [item_of(db, p["assignment_id"]).item for p in served]
    # rate 1: both honeypots first (each once), then the three regular pairs; nothing after them
    assert sorted(items[:2]) == ["g0", "g1"] and items[2:] == ["p0", "p1", "p2"]
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        rows = export_rows(s)
    engine.dispose()
    assert [r.get("gold") for r in rows][:2] == ["chosen", "chosen"] and all("gold" not in r for r in rows[2:])


def test_export_maps_shown_sides_to_chosen_and_rejected(project):
    db, tokens, _, client = project
    out = {}
    for want, strength, attrs in (("1", "much_better", {"helpfulness": "b", "style": "tie"}), ("2", "better", {}),
                                  ("tie", "", {})):
        item = client.get("/api/next", headers=bearer(tokens["alice"])).json()
        choice = choice_for(db, item, want, strength)
        r = label(client, tokens["alice"], item, choice=choice, attributes=attrs, rationale="because")
        assert r.status_code == 201
        out[want] = (item, choice)
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        rows = export_rows(s)
    engine.dispose()
    by_item = {r["item"]: r for r in rows}
    for want, (item, choice) in out.items():
        pair = item_of(db, item["assignment_id"])
        row = by_item[pair.item]
        shown_a_text = item["response_a"]
        assert row["annotator"] == "alice" and row["rationale"] == "because" and row["id"] == f"{pair.item}#alice"
        if want == "tie":
            assert row["close"] is True and row["confidence"] == 0.5 and row["chosen"] == pair.response_1
        else:
            assert row["close"] is False
            assert row["chosen"] == (pair.response_1 if want == "1" else pair.response_2)
            assert row["confidence"] == (1.0 if want == "1" else 0.75)
            # shown_first: was chosen on the left?
            assert row["shown_first"] == ("chosen" if row["chosen"][0]["content"] == shown_a_text else "rejected")
    helpful = by_item[item_of(db, out["1"][0]["assignment_id"]).item]["attributes"]
    # "b" = the response on the right; chosen was on the left when the choice was a_*
    assert helpful == {"helpfulness": "rejected" if out["1"][1].startswith("a_") else "chosen", "style": "tie"}


def test_stats_match_hand_computed_kappa_wilson_and_biases(tmp_path):
    db, tokens, admin = make_project(tmp_path, num_pairs=4, raters=("alice", "bob"), per_pair=2, num_gold=2,
                                     honeypot_rate=1.0)
    # verdicts (1 = the input's chosen, 2 = its rejected) on p0..p3: alice 1 1 2 2, bob 1 2 2 2.
    # Cohen's kappa: p_o = 3/4; p_e = .5 * .25 + .5 * .75 = .5; kappa = (.75 - .5) / .5 = 0.5.
    plan = {"alice": {"p0": "1", "p1": "1", "p2": "2", "p3": "2", "g0": "1", "g1": "2"},
            "bob": {"p0": "1", "p1": "2", "p2": "2", "p3": "2", "g0": "1", "g1": "1"}}
    with TestClient(create_app(str(db))) as client:
        firsts = {"alice": 0, "bob": 0}
        for rater in ("alice", "bob"):
            while (r := client.get("/api/next", headers=bearer(tokens[rater]))).status_code == 200:
                item = r.json()
                choice = choice_for(db, item, plan[rater][item_of(db, item["assignment_id"]).item])
                firsts[rater] += choice.startswith("a_")
                assert label(client, tokens[rater], item, choice=choice).status_code == 201
        stats = client.get("/api/stats", headers=bearer(admin)).json()
    rows = {r["rater"]: r for r in stats["raters"]}
    assert stats["num_labels"] == 12 and stats["num_complete"] == 4 and stats["num_honeypots"] == 2
    assert rows["alice"]["kappa_with_others"] == 0.5 and rows["bob"]["kappa_with_others"] == 0.5
    assert stats["pairwise"] == [{"raters": ["alice", "bob"], "kappa": 0.5, "num_shared": 4}]
    # alice: 1 of 2 honeypots right -> Wilson 95%: centre 0.5, half-width 0.40547 (z = 1.95996, n = 2)
    assert rows["alice"]["honeypot_accuracy"] == 0.5 and rows["alice"]["honeypot_interval"] == [0.0945, 0.9055]
    assert rows["bob"]["honeypot_accuracy"] == 1.0
    # every label decided: first-shown share = picks of side a / 6; chosen is always the longer response
    assert rows["alice"]["first_shown_share"] == round(firsts["alice"] / 6, 4)
    assert rows["alice"]["longer_share"] == 0.5 and rows["bob"]["longer_share"] == 0.5  # 3 of 6 picked "1"
    assert rows["alice"]["num_labels"] == 6 and rows["alice"]["tie_rate"] == 0.0


def _expire(db, assignment_id: str) -> None:
    engine = make_engine(str(db))
    with sessions(engine).begin() as s:
        a = s.get(Assignment, assignment_id)
        a.served_at -= timedelta(hours=2)
        a.expires_at = a.served_at + timedelta(seconds=1)
    engine.dispose()


def test_an_expired_assignment_frees_its_slot_and_is_renewed_only_while_the_pair_has_room(tmp_path):
    db, tokens, _ = make_project(tmp_path, num_pairs=1, raters=("alice", "bob"), per_pair=1)
    with TestClient(create_app(str(db))) as client:
        alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
        first = client.get("/api/next", headers=alice).json()
        assert client.get("/api/next", headers=bob).status_code == 204  # K = 1: alice holds the only slot
        _expire(db, first["assignment_id"])
        again = client.get("/api/next", headers=alice).json()  # still room: renewed, same assignment
        assert again["assignment_id"] == first["assignment_id"]
        assert label(client, tokens["alice"], again).status_code == 201

    (tmp_path / "b").mkdir()
    db, tokens, _ = make_project(tmp_path / "b", num_pairs=1, raters=("alice", "bob"), per_pair=1)
    with TestClient(create_app(str(db))) as client:
        alice, bob = bearer(tokens["alice"]), bearer(tokens["bob"])
        first = client.get("/api/next", headers=alice).json()
        _expire(db, first["assignment_id"])
        taken = client.get("/api/next", headers=bob).json()  # the expired slot is free: bob gets the pair
        assert item_of(db, taken["assignment_id"]).item == "p0"
        assert label(client, tokens["bob"], taken).status_code == 201
        assert client.get("/api/next", headers=alice).status_code == 204  # full now: alice's is dropped
        r = label(client, tokens["alice"], first)
        assert r.status_code == 404  # dropped, so unknown; nothing written
    assert n_labels(db) == 1
