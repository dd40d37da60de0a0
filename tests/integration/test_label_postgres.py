"""The labelling service on PostgreSQL (`--db postgresql+psycopg://...`), unchanged code: a throw-away server
(Debian's postgresql: initdb + pg_ctl, on a Unix socket in a temporary folder, as the `postgres` user when the
tests run as root) with a fresh database per test. Skipped when PostgreSQL's binaries or psycopg are missing.

Checked there: each pair to K different raters then 204, a replay refused with nothing written, the export,
and 10 concurrent raters against two server processes on one database (the FOR UPDATE lock row
serialises assignment) losing and duplicating nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
psycopg = pytest.importorskip("psycopg")

from fastapi.testclient import TestClient
from label_support import free_port, make_project, start_server, stop_server
from sqlalchemy import select

from preftune.label.app import create_app
from preftune.label.export import export_rows
from preftune.label.store import Label, count_labels, make_engine, read_sessions


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


@pytest.fixture(scope="module")
def pg_server():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="preftune-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], check=True,
                   capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-k {root} -p {port} -c listen_addresses='' -c fsync=off", "start"], check=True,
                   capture_output=True)
    try:
        yield {"host": str(root), "port": port}
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], check=False,
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server, request):
    name = "t_" + request.node.name.lower()[:40].replace("[", "_").replace("]", "_")
    with psycopg.connect(dbname="postgres", user="postgres", autocommit=True, **pg_server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@/{name}?host={pg_server['host']}&port={pg_server['port']}"


def _labels(url: str) -> list[Label]:
    engine = make_engine(url)
    with read_sessions(engine)() as s:
        out = list(s.scalars(select(Label)))
    engine.dispose()
    return out


def test_assignment_refusals_and_export_on_postgres(tmp_path, pg_url):
    db, tokens, _ = make_project(tmp_path, num_pairs=3, raters=("alice", "bob", "carol"), per_pair=2, db=pg_url)
    with TestClient(create_app(db, "disagreement")) as client:  # its SQL (CASE, COUNT DISTINCT) on PostgreSQL
        for rater in ("alice", "bob", "carol"):
            head = {"Authorization": f"Bearer {tokens[rater]}"}
            while (r := client.get("/api/next", headers=head)).status_code == 200:
                body = {"assignment_id": r.json()["assignment_id"], "choice": "b_much_better"}
                assert client.post("/api/labels", json=body, headers=head).status_code == 201
                replay = client.post("/api/labels", json=body, headers=head)
                assert replay.status_code == 409
            assert r.status_code == 204
    labels = _labels(db)
    assert len(labels) == 6
    by_pair: dict[int, set] = {}
    for x in labels:
        by_pair.setdefault(x.pair_id, set()).add(x.rater_id)
    assert sorted(len(v) for v in by_pair.values()) == [2, 2, 2]
    engine = make_engine(db)
    with read_sessions(engine)() as s:
        rows = export_rows(s)
        assert count_labels(s) == 6
    engine.dispose()
    assert len({r["id"] for r in rows}) == 6 and all(r["confidence"] == 1.0 for r in rows)


def test_ten_concurrent_raters_on_postgres(tmp_path, pg_url):
    import httpx

    names = [f"r{i}" for i in range(10)]
    db, tokens, _ = make_project(tmp_path, num_pairs=8, raters=names, per_pair=3, db=pg_url)
    # two server processes on one database: only the database's lock (FOR UPDATE on the lock row) keeps them
    # from handing a pair's last slot to two raters at once
    servers = [start_server(db), start_server(db)]
    acked: list[int] = []
    bad: list = []

    def rate(token: str, url: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            while (r := c.get("/api/next")).status_code == 200:
                p = c.post("/api/labels", json={"assignment_id": r.json()["assignment_id"], "choice": "tie"})
                (acked.append(p.json()["label_id"]) if p.status_code == 201 else bad.append(p.text))
            if r.status_code != 204:
                bad.append(r.text)

    try:
        threads = [threading.Thread(target=rate, args=(tokens[n], servers[i % 2][1])) for i, n in enumerate(names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        for proc, _ in servers:
            stop_server(proc)
    labels = _labels(db)
    assert bad == [] and len(acked) == 24 and sorted(acked) == sorted(x.id for x in labels)
    by_pair: dict[int, list] = {}
    for x in labels:
        by_pair.setdefault(x.pair_id, []).append(x.rater_id)
    assert len(by_pair) == 8 and all(len(v) == 3 == len(set(v)) for v in by_pair.values())
