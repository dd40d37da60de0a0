"""Load on the labelling server: R concurrent raters on loopback, each labelling every one of P pairs
(labels_per_pair = R), against `preftune label serve` in a subprocess on a SQLite file (WAL, synchronous=FULL).

Measures the latency of each request (GET /api/next, POST /api/labels; p50 / p95 / p99 / max), throughput,
and checks the invariants of the tests at this size: every 201 is one label in the export, none lost or
duplicated, each pair labelled by R different raters.

    .venv/bin/python benchmarks/label_load.py --raters 50 --pairs 40 --out-md benchmarks/results/label_load.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import httpx
from sqlalchemy import select

from preftune.label.export import export_rows
from preftune.label.project import init_project
from preftune.label.store import Label, make_engine, read_sessions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "preftune", "label", "serve", "--db", db, "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/api/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _rater(url: str, token: str, lat: dict, acked: list, errors: list) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while True:
            t0 = time.perf_counter()
            r = c.get("/api/next")
            lat["next"].append(time.perf_counter() - t0)
            if r.status_code == 204:
                return
            if r.status_code != 200:
                errors.append(("next", r.status_code, r.text))
                return
            aid = r.json()["assignment_id"]
            t0 = time.perf_counter()
            r = c.post("/api/labels", json={"assignment_id": aid, "choice": "a_better", "attributes": {},
                                            "rationale": ""})
            lat["labels"].append(time.perf_counter() - t0)
            if r.status_code != 201:
                errors.append(("labels", r.status_code, r.text))
                return
            acked.append(r.json()["label_id"])


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000 if len(xs) > 1 else xs[0] * 1000


def run(num_raters: int, num_pairs: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="label-load-"))
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?", "chosen": f"Answer {i}, long.",
                                         "rejected": f"Answer {i}."}) + "\n" for i in range(num_pairs)))
    db = str(tmp / "load.db")
    res = init_project(db, str(pairs), raters=[f"r{i}" for i in range(num_raters)], per_pair=num_raters)
    proc, url = _serve(db)
    lat: dict[str, list[float]] = {"next": [], "labels": []}
    acked: list[int] = []
    errors: list = []
    try:
        threads = [threading.Thread(target=_rater, args=(url, tok, lat, acked, errors)) for tok in res.tokens.values()]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    engine = make_engine(db)
    with read_sessions(engine)() as s:
        rows = export_rows(s)
        stored = set(s.scalars(select(Label.id)))
    engine.dispose()
    ids = [r["id"] for r in rows]
    per_item: dict[str, set] = {}
    for r in rows:
        per_item.setdefault(r["item"], set()).add(r["annotator"])
    out = {"raters": num_raters, "pairs": num_pairs, "expected_labels": num_raters * num_pairs,
           "acknowledged": len(acked), "exported": len(rows), "duplicates": len(ids) - len(set(ids)),
           "lost": len(set(acked) - stored), "errors": errors[:5],
           "every_pair_by_every_rater": all(len(v) == num_raters for v in per_item.values())
           and len(per_item) == num_pairs,
           "wall_s": round(wall, 2), "requests_per_s": round((len(lat["next"]) + len(lat["labels"])) / wall, 1)}
    for k, xs in lat.items():
        out[k] = {"n": len(xs), "p50_ms": round(_pct(xs, 50), 1), "p95_ms": round(_pct(xs, 95), 1),
                  "p99_ms": round(_pct(xs, 99), 1), "max_ms": round(max(xs) * 1000, 1)}
    return out


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg_1m_before": round(os.getloadavg()[0], 2), "sqlite": sqlite3.sqlite_version,
            **{p: version(p) for p in ("fastapi", "uvicorn", "sqlalchemy", "httpx", "starlette")}}


def markdown(r: dict, m: dict, cmd: str) -> str:
    lines = ["# Labelling server under load", "",
             (f"{r['raters']} concurrent raters (threads, one HTTP connection each) on loopback, each labelling all "
             f"{r['pairs']} pairs (labels_per_pair = {r['raters']}), against `preftune label serve` in a subprocess "
             "(one uvicorn worker) on a SQLite file (WAL, synchronous=FULL, BEGIN IMMEDIATE per write)."), "",
             "| request | n | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for k, name in (("next", "GET /api/next"), ("labels", "POST /api/labels")):
        x = r[k]
        lines.append(f"| {name} | {x['n']} | {x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['max_ms']} |")
    lines += ["", (f"- labels expected {r['expected_labels']}, acknowledged (201) {r['acknowledged']}, exported "
                  f"{r['exported']}; lost {r['lost']}, duplicated {r['duplicates']}; every pair labelled by every "
                  f"rater: {r['every_pair_by_every_rater']}; errors: {r['errors'] or 'none'}"),
              f"- wall {r['wall_s']} s, {r['requests_per_s']} requests/s", "",
              (f"Machine: {m['platform']}, {m['cpus']} CPUs (shared; 1-minute load average {m['load_avg_1m_before']} "
              f"before the run), Python {m['python']}, SQLite {m['sqlite']}, fastapi {m['fastapi']}, uvicorn "
              f"{m['uvicorn']}, starlette {m['starlette']}, SQLAlchemy {m['sqlalchemy']}, httpx {m['httpx']}."), "",
              f"Command: `{cmd}`", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", type=int, default=50)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--out-md", help="write the results table here")
    args = ap.parse_args()
    m = machine()
    r = run(args.raters, args.pairs)
    print(json.dumps({"machine": m, "result": r}, indent=1))
    if args.out_md:
        cmd = "python benchmarks/label_load.py " + " ".join(sys.argv[1:])
        Path(args.out_md).write_text(markdown(r, m, cmd))
    ok = r["lost"] == 0 and r["duplicates"] == 0 and r["acknowledged"] == r["exported"] == r["expected_labels"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
