"""The HTTP judge against local stub servers (issue 16 items 2 and 6): a redirect never carries the
key to another origin and is never counted as a verdict; 5xx and reset connections are retried with
backoff; a server that trickles bytes hits the per-request deadline; the overall deadline holds; an
oversized answer is refused; every error names the endpoint. And `eval policy` keeps the generated
samples when judging fails, so that `--generated` judges them without generating again."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import answer_chat

from preftune.eval import judges as J


def _verdict_body(verdict: str = "A") -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()


class _Server:
    """A stub on a free 127.0.0.1 port; `script` is a list of behaviours, one per request (the last repeats):
    ("ok", verdict) | ("status", code) | ("reset",) | ("redirect", url) | ("trickle", seconds) | ("big", bytes)."""

    def __init__(self, script):
        self.script, self.seen = list(script), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
                step = outer.script[min(len(outer.seen) - 1, len(outer.script) - 1)]
                kind = step[0]
                if kind == "ok":
                    answer_chat(self, step[1])
                elif kind == "status":
                    self.send_response(step[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind == "reset":
                    self.connection.shutdown(2)  # close without an answer
                elif kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", step[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind == "trickle":
                    data = _verdict_body("A")
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for b in data:  # one byte every step[1] seconds
                        try:
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(step[1])
                elif kind == "big":  # with a Content-Length, or (negative size) streamed without one
                    self.send_response(200)
                    if step[1] > 0:
                        self.send_header("Content-Length", str(step[1]))
                    self.end_headers()
                    try:
                        self.wfile.write(b" " * abs(step[1]))
                    except OSError:
                        pass

            do_POST = do_GET = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _judge(url, **kw):
    return J.make_judge(url, key_env="PT_TEST_JUDGE_KEY", **{"backoff": 0.01, **kw})


def test_a_redirect_to_another_origin_never_sees_the_key_and_gives_no_verdict(monkeypatch):
    monkeypatch.setenv("PT_TEST_JUDGE_KEY", "sekret")
    with _Server([("ok", "A")]) as other, _Server([("redirect", other.url + "/chat/completions")]) as first:
        judge = _judge(first.url)
        with pytest.raises(ValueError, match=r"redirect to .* refused") as e:
            judge.compare(["p"], ["a"], ["b"])
        assert first.url in str(e.value)  # the error names the endpoint
        assert first.seen and first.seen[0][2] == "Bearer sekret"
        assert other.seen == []  # the other origin was never contacted: no key, no GET counted as a verdict


def test_5xx_and_reset_connections_are_retried_then_answered(monkeypatch):
    with _Server([("status", 503), ("reset",), ("ok", "A"), ("ok", "B")]) as s:
        judge = _judge(s.url, retries=3)
        assert judge.compare(["p"], ["x"], ["y"]) == [1.0]  # A first, then B with the order swapped: a wins
        assert len(s.seen) == 4  # 503, reset, then the two real answers


def test_retries_are_bounded_and_the_error_names_endpoint_and_status():
    with _Server([("status", 503)]) as s:
        judge = _judge(s.url, retries=2)
        with pytest.raises(ValueError, match=r"HTTP 503.*after 3 attempts") as e:
            judge.compare(["p"], ["x"], ["y"])
        assert s.url in str(e.value) and len(s.seen) == 3


def test_a_4xx_is_not_retried():
    with _Server([("status", 401)]) as s:
        with pytest.raises(ValueError, match=r"answered HTTP 401"):
            _judge(s.url, retries=5).compare(["p"], ["x"], ["y"])
        assert len(s.seen) == 1


def test_a_trickling_server_hits_the_per_request_deadline():
    with _Server([("trickle", 0.2)]) as s:  # ~70 bytes at 5 bytes/s would take ~14 s
        judge = _judge(s.url, timeout=0.6, retries=0)
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=r"no complete answer within 0.6 s"):
            judge.compare(["p"], ["x"], ["y"])
        assert time.monotonic() - t0 < 5  # bounded by the deadline, not by the trickle


def test_the_overall_deadline_stops_retrying():
    with _Server([("status", 503)]) as s:
        judge = _judge(s.url, retries=100, backoff=0.2, deadline=1.0)
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=r"deadline of 1 s"):
            judge.compare(["p"] * 3, ["x"] * 3, ["y"] * 3)
        assert time.monotonic() - t0 < 4
        assert len(s.seen) < 100


@pytest.mark.parametrize("size", [5_000, 2_000_000, -2_000_000])
def test_an_oversized_answer_is_refused(size):
    with _Server([("big", size)]) as s, pytest.raises(ValueError, match=r"over the limit of 1,000 bytes"):
        _judge(s.url, max_bytes=1000, retries=0).compare(["p"], ["x"], ["y"])


def test_bad_limits_are_refused():
    for kw in ({"timeout": 0}, {"max_bytes": -1}, {"retries": -1}, {"deadline": 0}):
        with pytest.raises(ValueError, match="http judge"):
            _judge("http://127.0.0.1:9/v1", **kw)


def test_the_judge_is_recorded_as_its_url():
    assert J.make_judge("http:http://127.0.0.1:9/v1").name == "http://127.0.0.1:9/v1"


def test_eval_policy_keeps_the_samples_when_judging_fails_and_resumes_from_them(tmp_path, capsys):
    from preftune.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}."}) + "\n" for w in ("hi", "bye", "yes")))
    out = tmp_path / "policy.json"
    argv = ["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama", "--json", str(out),
            "--max-new-tokens", "3", "--judge-retries", "0"]
    with _Server([("status", 503)]) as down:
        assert main([*argv, "--judge", down.url]) == 1
    err = capsys.readouterr().err
    kept = tmp_path / "policy.json.generated.json"
    assert f"--generated {kept}" in err and kept.is_file() and not out.exists()
    samples = json.loads(kept.read_text())
    assert len(samples["model_texts"]) == len(samples["baseline_texts"]) == 3
    # another seed made other samples: refused, naming the key
    assert main([*argv, "--judge", "gold", "--generated", str(kept), "--seed", "1"]) == 1
    assert "seed differ" in capsys.readouterr().err
    assert main([*argv, "--judge", "gold", "--generated", str(kept)]) == 0
    report = json.loads(out.read_text())
    assert [s["model"] for s in report["samples"]] == samples["model_texts"]
    assert [s["baseline"] for s in report["samples"]] == samples["baseline_texts"]
    assert report["kl_k1"] == samples["kl_k1"] and kept.exists()  # an input file is never removed
