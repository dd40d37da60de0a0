"""`preftune label ai` against a scripted local OpenAI-compatible judge: both orders asked, their agreement
gives confidence, a contradiction gives a tie, each principle an attribute; the output passes `data check`."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from helpers import answer_chat, judged_responses
from label_support import pair_rows, write_jsonl

from preftune.cli import main
from preftune.label.ai import combine_orders, load_constitution


class _Judge(BaseHTTPRequestHandler):
    """A scripted judge. Its rule is the principle's question (LONG, SHORT, POS = always A, SAME = always tie);
    the general question follows `overall`."""
    overall = "LONG"
    calls = 0

    def do_POST(self):
        text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
        type(self).calls += 1
        m = re.search(r"Principle: (\w+)", text)
        rule = m.group(1) if m else type(self).overall
        first, second = judged_responses(text)
        longer = "A" if len(first) > len(second) else "B"
        verdict = {"LONG": longer, "SHORT": "B" if longer == "A" else "A", "POS": "A", "SAME": "T"}[rule]
        answer_chat(self, verdict)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Judge.calls = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_combine_orders_table():
    # (verdict with the first response shown as A, with it shown as B) -> (verdict for the input, confidence)
    assert combine_orders("A", "B") == ("1", 1.0) and combine_orders("B", "A") == ("2", 1.0)
    assert combine_orders("T", "T") == ("tie", 0.5)
    assert combine_orders("A", "A") == ("tie", 0.5) and combine_orders("B", "B") == ("tie", 0.5)  # position
    assert combine_orders("A", "T") == ("1", 0.75) and combine_orders("T", "B") == ("1", 0.75)
    assert combine_orders("B", "T") == ("2", 0.75) and combine_orders("T", "A") == ("2", 0.75)


def test_default_constitution_and_bad_files(tmp_path):
    assert [p.name for p in load_constitution()] == ["helpfulness", "harmlessness", "honesty", "style"]
    bad = tmp_path / "c.yaml"
    bad.write_text("- name: ok\n  question: fine?\n- name: ok\n  question: again?\n")
    with pytest.raises(ValueError, match="entry 2: name: 'ok' is not a valid dimension name or is repeated"):
        load_constitution(str(bad))
    bad.write_text("- name: x\n")
    with pytest.raises(ValueError, match="entry 1: must have exactly the keys name and question"):
        load_constitution(str(bad))


def _summary(err: str) -> dict:
    return json.loads(next(line for line in err.splitlines() if line.startswith("{")))


def _constitution(tmp_path):
    path = tmp_path / "const.yaml"
    path.write_text("".join(f"- name: {n}\n  question: {q}\n" for n, q in
                            (("long", "LONG"), ("short", "SHORT"), ("pos", "POS"), ("same", "SAME"))))
    return path


def test_label_ai_with_a_scripted_http_judge(tmp_path, judge_url, capsys):
    rows = pair_rows(3)
    rows[0]["gold"] = "chosen"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "ai.jsonl"
    args = ["label", "ai", "--judge", f"http:{judge_url}", "--pairs", str(pairs), "-o", str(out),
            "--constitution", str(_constitution(tmp_path))]
    _Judge.overall = "LONG"
    assert main(args) == 0
    assert _Judge.calls == 3 * 5 * 2  # 3 pairs x (overall + 4 principles) x both orders
    summary = _summary(capsys.readouterr().err)
    assert summary["position_bias_rate"] == 0.0 and summary["num_ties"] == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    for row, src in zip(got, rows):
        assert row["chosen"][0]["content"] == src["chosen"]  # the longer one, in both orders
        assert row["confidence"] == 1.0 and row["close"] is False
        assert row["annotator"] == judge_url  # the judge is named by its URL (itself a judge spec)
        assert row["attributes"] == {"long": "chosen", "short": "rejected", "pos": "tie", "same": "tie"}
        assert "overall: A/B" in row["rationale"] and "pos: A/A" in row["rationale"]
    assert got[0]["gold"] == "chosen"
    assert main(["data", "check", str(out)]) == 0
    assert main(args) == 1
    assert "already exists; pass --force" in capsys.readouterr().err

    # a judge that prefers the shorter one: chosen and rejected swap, and so do gold and the attributes
    _Judge.overall = "SHORT"
    assert main(args + ["--force"]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["chosen"][0]["content"] == s["rejected"] for r, s in zip(got, rows))
    assert got[0]["gold"] == "rejected"
    assert got[0]["attributes"] == {"long": "rejected", "short": "chosen", "pos": "tie", "same": "tie"}

    # a judge that always answers A: the two orders contradict on every pair -> all ties
    _Judge.overall = "POS"
    capsys.readouterr()
    assert main(args + ["--force"]) == 0
    summary = _summary(capsys.readouterr().err)
    assert summary["position_bias_rate"] == 1.0 and summary["num_ties"] == 3
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["close"] is True and r["confidence"] == 0.5 and r["chosen"][0]["content"] == s["chosen"]
               for r, s in zip(got, rows))


def test_label_ai_refuses_scoring_judges(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))
    assert main(["label", "ai", "--judge", "gold", "--pairs", str(pairs), "-o", str(tmp_path / "o.jsonl")]) == 1
    assert "use llm:MODEL or http:URL" in capsys.readouterr().err


def test_label_ai_with_a_local_llm_judge(tmp_path, capsys):
    # the tiny random model's verdicts mean nothing; what is checked is the plumbing: every principle's own
    # prompt reaches the model (the template), both orders are combined, and the output is valid
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))
    const = tmp_path / "c.yaml"
    const.write_text("- name: style\n  question: Which is better written?\n")
    out = tmp_path / "ai.jsonl"
    assert main(["label", "ai", "--judge", "llm:tiny-llama", "--pairs", str(pairs), "-o", str(out),
                 "--constitution", str(const)]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(got) == 2 and all(r["annotator"] == "llm:tiny-llama" for r in got)
    assert all(set(r["attributes"]) == {"style"} for r in got)
    assert all(r["confidence"] in (0.5, 0.75, 1.0) and r["close"] == (r["confidence"] == 0.5) for r in got)
    assert main(["data", "check", str(out)]) == 0
