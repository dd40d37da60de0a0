"""Concurrency and durability against a real `preftune label serve` subprocess on 127.0.0.1:

- 10 raters in threads, split over two server processes on one SQLite file, label until they get 204: every
  201 is one stored label, none lost or duplicated, and each pair got exactly K labels from K different raters;
- the server SIGKILLed in the middle of such a load and restarted on the same database: every acknowledged
  (201) label is in the export, and the assignments that were open (fetched, not submitted) are served
  again to their raters and can be labelled.

No timing is asserted (the load figures live in benchmarks/label_load.py).
"""

from __future__ import annotations

import signal
import threading
from collections import Counter

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from label_support import make_project, start_server, stop_server
from sqlalchemy import select

from preftune.label.export import export_rows
from preftune.label.store import Label, Pair, Principal, make_engine, sessions


class Rater(threading.Thread):
    """Labels until 204 (or until the server goes away). `state`: the assignment fetched and not yet
    submitted ("fetched"), or being submitted ("posting") when the loop stopped."""

    def __init__(self, url: str, name: str, token: str, acked: list) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.token, self.acked = url, name, token, acked
        self.state: tuple[str, str] | None = None
        self.statuses: Counter = Counter()
        self.finished = False

    def run(self) -> None:
        head = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=head, timeout=30) as c:
            try:
                while True:
                    r = c.get("/api/next")
                    self.statuses[r.status_code] += 1
                    if r.status_code == 204:
                        self.finished = True
                        return
                    aid = r.json()["assignment_id"]
                    self.state = ("fetched", aid)
                    self.state = ("posting", aid)
                    r = c.post("/api/labels", json={"assignment_id": aid, "choice": "a_better", "attributes": {},
                                                    "rationale": self.name})
                    self.statuses[r.status_code] += 1
                    if r.status_code == 201:
                        self.acked.append((self.name, aid, r.json()["label_id"]))
                    self.state = None
            except httpx.TransportError:  # the server was killed
                return


def _db_labels(db) -> list[Label]:
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        out = list(s.scalars(select(Label)))
    engine.dispose()
    return out


def test_ten_concurrent_raters_lose_and_duplicate_nothing(tmp_path):
    names = [f"r{i}" for i in range(10)]
    db, tokens, _ = make_project(tmp_path, num_pairs=12, raters=names, per_pair=3)
    # two server processes on one SQLite file: only BEGIN IMMEDIATE keeps them from handing a pair's last slot
    # to two raters at once (within one process a mutex does)
    servers = [start_server(db), start_server(db)]
    acked: list = []
    try:
        threads = [Rater(servers[i % 2][1], n, tokens[n], acked) for i, n in enumerate(names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert all(t.finished for t in threads)
        assert not any(code >= 500 for t in threads for code in t.statuses), [t.statuses for t in threads]
    finally:
        for proc, _ in servers:
            stop_server(proc)
    labels = _db_labels(db)
    assert len(acked) == 36 and len(labels) == 36  # 12 pairs x K = 3: every 201 stored, nothing more
    assert len({lid for _, _, lid in acked}) == 36 and {lid for _, _, lid in acked} == {x.id for x in labels}
    assert len({x.assignment_id for x in labels}) == 36
    per_pair: dict[int, list[int]] = {}
    for x in labels:
        per_pair.setdefault(x.pair_id, []).append(x.rater_id)
    assert len(per_pair) == 12 and all(len(v) == 3 == len(set(v)) for v in per_pair.values())


def test_sigkill_mid_load_keeps_every_acknowledged_label_and_serves_open_assignments_again(tmp_path):
    names = [f"r{i}" for i in range(6)]
    db, tokens, _ = make_project(tmp_path, num_pairs=60, raters=names, per_pair=2)  # 120 labels: killed well before
    proc, url = start_server(db)
    acked: list = []
    threads = [Rater(url, n, tokens[n], acked) for n in names[1:]]
    try:
        # names[0] fetches an assignment and never submits it: it is open when the server dies
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[names[0]]}"}) as c:
            held = c.get("/api/next").json()["assignment_id"]
        for t in threads:
            t.start()
        while len(acked) < 10 and any(t.is_alive() for t in threads):
            threading.Event().wait(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for t in threads:
            t.join(timeout=60)
    finally:
        stop_server(proc)
    assert len(acked) >= 10 and not any(t.finished for t in threads)  # killed mid-load, not after it
    open_before = {names[0]: held} | {t.name: t.state[1] for t in threads if t.state and t.state[0] == "fetched"}

    proc, url = start_server(db)
    try:
        for name, aid in open_before.items():
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}) as c:
                item = c.get("/api/next").json()
                assert item["assignment_id"] == aid  # served again after the restart
                assert c.post("/api/labels", json={"assignment_id": aid, "choice": "tie"}).status_code == 201
    finally:
        stop_server(proc)
    labels = {x.assignment_id: x for x in _db_labels(db)}
    assert all(aid in labels and labels[aid].id == lid for _, aid, lid in acked)  # every 201 survived the kill
    engine = make_engine(str(db))
    with sessions(engine)() as s:
        rows = export_rows(s)
        expected = {f"{s.get(Pair, x.pair_id).item}#{s.get(Principal, x.rater_id).name}" for x in labels.values()}
    engine.dispose()
    assert {r["id"] for r in rows} == expected and len(rows) == len(labels)
    assert len(rows) >= len(acked) + len(open_before)
