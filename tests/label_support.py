"""Shared set-up of the labelling tests: pair files, projects, and a real server in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XSS = ('<script>document.documentElement.dataset.pwned = "1"</script>'
       '<img src=x onerror="document.documentElement.dataset.pwned = 2">')


def pair_rows(n: int, prefix: str = "p", xss_first: bool = False) -> list[dict]:
    """n pairs; in pair i, chosen is i + 1 words longer than rejected (length bias is measurable)."""
    rows = []
    for i in range(n):
        prompt = f"Question {prefix}{i}: name a colour."
        if xss_first and i == 0:
            prompt = f"Say hello {XSS}"
        rows.append({"id": f"{prefix}{i}", "prompt": prompt, "chosen": "Blue " + "very " * (i + 1) + "nice.",
                     "rejected": f"Red {i}." + (f" {XSS}" if xss_first and i == 0 else ""), "category": "colours"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_project(tmp: Path, num_pairs: int = 4, raters=("alice", "bob"), per_pair: int = 2, num_gold: int = 0,
                 honeypot_rate: float = 0.0, xss_first: bool = False, ttl: int = 3600, db: str | None = None):
    """(db path or URL, rater name -> token, admin token) of a new project (SQLite in `tmp` unless `db`)."""
    from preftune.label.project import init_project

    pairs = write_jsonl(tmp / "pairs.jsonl", pair_rows(num_pairs, xss_first=xss_first))
    gold = write_jsonl(tmp / "gold.jsonl", pair_rows(num_gold, prefix="g")) if num_gold else None
    db = db or tmp / "label.db"
    res = init_project(str(db), str(pairs), raters=list(raters), per_pair=per_pair,
                       honeypots=str(gold) if gold else None, honeypot_rate=honeypot_rate, assignment_ttl_s=ttl)
    return db, res.tokens, res.admin_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int | None = None, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """`preftune label serve` on a free 127.0.0.1 port, once /api/health answers."""
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "preftune", "label", "serve", "--db", str(db), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not answer /api/health in time")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()
