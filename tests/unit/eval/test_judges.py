"""Judges: spec parsing, the position swap, verdict parsing, the gold judge, and the HTTP judge
against a local OpenAI-compatible stub server (consistent and position-biased)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import numpy as np
import pytest
from helpers import answer_chat, judged_responses

from preftune.eval import judges as J


def test_parse_judge_spec():
    assert J.parse_judge_spec("gold") == (J.JudgeKind.GOLD, "")
    assert J.parse_judge_spec("rm:runs/rm") == (J.JudgeKind.RM, "runs/rm")
    assert J.parse_judge_spec("llm:tiny-llama") == (J.JudgeKind.LLM, "tiny-llama")
    assert J.parse_judge_spec("http:http://x:1/v1") == (J.JudgeKind.HTTP, "http://x:1/v1")
    assert J.parse_judge_spec("http://x:1/v1") == (J.JudgeKind.HTTP, "http://x:1/v1")
    with pytest.raises(ValueError, match="unknown judge 'oracle'"):
        J.parse_judge_spec("oracle")
    with pytest.raises(ValueError, match="needs an argument"):
        J.parse_judge_spec("rm:")
    with pytest.raises(ValueError, match="best-of-N needs a scorer"):
        J.make_scorer("http://x")


def test_combine_swapped_by_hand():
    out, rate = J.combine_swapped(["A", "B", "T", "A", "A"], ["B", "A", "T", "A", "T"])
    assert out == [1.0, 0.0, 0.5, 0.5, 0.5]
    assert rate == pytest.approx(2 / 5)  # (A, A) and (A, T) follow the position


def test_parse_verdict():
    assert J.parse_verdict("A") == "A"
    assert J.parse_verdict("Response B is better. B") == "B"
    assert J.parse_verdict("tie") == "T"
    assert J.parse_verdict("no idea") == "T"
    assert J.parse_verdict("it is a close call, but B") == "B"  # the article "a" is no verdict


def test_verdicts_from_scores():
    assert J.verdicts_from_scores(np.array([1.0, 0.2, 0.5]), np.array([0.5, 0.3, 0.5])) == [1.0, 0.0, 0.5]


def test_gold_judge_prefers_the_correct_answer():
    judge = J.make_judge("gold")
    out = judge.compare(["What is 2 + 3?", "What is 2 + 3?"], ["2 + 3 = 5", "It is 7"], ["It is 7", "2 + 3 = 5"])
    assert out == [1.0, 0.0]
    assert judge.score(["What is 2 + 3?"], ["5"])[0] > judge.score(["What is 2 + 3?"], ["4"])[0]


class _Stub(BaseHTTPRequestHandler):
    """Answers an OpenAI chat request; `mode` "longer" prefers the longer response, "A" always says A."""
    mode = "longer"
    seen: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        text = body["messages"][0]["content"]
        first, second = judged_responses(text)
        if type(self).mode == "A":
            verdict = "A"
        else:
            verdict = "A" if len(first) > len(second) else "B" if len(second) > len(first) else "T"
        answer_chat(self, verdict)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    server = HTTPServer(("127.0.0.1", 0), _Stub)  # port 0: a free random port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_judge_consistent_stub(stub_server, monkeypatch):
    _Stub.mode = "longer"
    monkeypatch.setenv("MY_JUDGE_KEY", "sekret")
    judge = J.make_judge(f"http:{stub_server}", judge_model="stub", key_env="MY_JUDGE_KEY")
    out = judge.compare(["p1", "p2", "p3"], ["a long answer", "b", "same"], ["short", "a longer answer", "same"])
    assert out == [1.0, 0.0, 0.5]
    assert judge.info["position_bias_rate"] == 0.0
    assert len(_Stub.seen) == 6  # asked twice per pair
    path, auth, body = _Stub.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sekret" and body["model"] == "stub"
    # the second pass swapped the positions: pair 1's long answer is now Response B
    first_pass, second_pass = _Stub.seen[0][2]["messages"][0]["content"], _Stub.seen[3][2]["messages"][0]["content"]
    assert "[Response A]\na long answer" in first_pass and "[Response B]\na long answer" in second_pass


def test_http_judge_position_biased_stub(stub_server):
    _Stub.mode = "A"
    judge = J.make_judge(stub_server)
    out = judge.compare(["p1", "p2", "p3", "p4"], ["x", "yy", "zzz", "w"], ["xx", "y", "z", "ww"])
    assert out == [0.5] * 4  # every verdict flips with the position: all ties
    assert judge.info["position_bias_rate"] == 1.0


def test_http_judge_unreachable_is_a_clear_error():
    judge = J.make_judge("http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="cannot reach judge endpoint"):
        judge.compare(["p"], ["a"], ["b"])


class _FakeScorer:
    """Stands in for preftune.models.scoring.load_scorer(run): reward = words, std = 0.1 * words."""

    def score(self, prompts, responses):
        words = np.array([len(r.split()) for r in responses], dtype=float)
        return {"reward": words, "std": 0.1 * words}


def test_rm_judge_through_load_scorer(monkeypatch, tmp_path):
    import sys
    import types

    from preftune.eval.policy import _score_guards

    fake = types.ModuleType("preftune.models.scoring")
    fake.load_scorer = lambda run_dir: _FakeScorer()
    monkeypatch.setitem(sys.modules, "preftune.models.scoring", fake)
    judge = J.make_judge(f"rm:{tmp_path}")
    assert judge.name == f"rm:{tmp_path}"
    model = ["one two three", "a", "x y", "p q r s t u v w"]
    out = judge.compare(["p"] * 4, model, ["one", "a b", "x y", "p"])
    assert out == [1.0, 0.0, 0.5, 1.0]
    np.testing.assert_allclose(judge.last_compare["std_a"], [0.3, 0.1, 0.2, 0.8])
    g = _score_guards(judge, model)
    assert g["mean_score_model"] == pytest.approx(14 / 4) and g["mean_score_baseline"] == pytest.approx(6 / 4)
    assert g["reward_length_bias"]["reward_length"]["spearman"] == pytest.approx(1.0)
    assert g["uncertain_responses"]["indices"] == [3]  # the only std above the 90% quantile
    with pytest.raises(ValueError, match="does not exist"):
        J.make_judge(f"rm:{tmp_path / 'missing'}")
