"""Agent evaluation: parsing tool calls from text, the multi-turn rollout loop against the world's tools
(scripted policies with exact metrics, and a tiny model), and the model-vs-baseline report."""

import json

import pytest

from preftune.data.records import validate_row
from preftune.eval.agent import evaluate_agent, hf_policy, parse_tool_calls, rollout, task_metrics
from preftune.world.agent import TOOLS, AgentTask

ARITH = AgentTask("arithmetic", "What is 12 * 3 + 4?",
                  [{"name": "calculator", "arguments": {"expression": "12 * 3 + 4"}}], "40", True)
NO_TOOL = AgentTask("no_tool", "Write the word 'river' backwards.", [], "revir", False)


def block(name, args):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


def scripted(*turns):
    """A policy answering turn k with turns[k] (whatever the conversation holds)."""
    def policy(conv):
        return turns[sum(m["role"] == "assistant" for m in conv)]
    return policy


def test_parse_tool_calls():
    text = 'Let me check.\n' + block("calculator", {"expression": "1+1"}) + "\n<tool_call>{oops}</tool_call>"
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert calls == [("calculator", '{"expression": "1+1"}'), ("", "{oops}")]
    assert parse_tool_calls("The answer is 2.") == ("The answer is 2.", [])


def test_rollout_executes_calls_and_stops_at_the_answer():
    good = scripted(block("calculator", {"expression": "12*3+4"}), "The answer is 40.")
    conv = rollout(good, ARITH)
    assert [m["role"] for m in conv] == ["user", "assistant", "tool", "assistant"]
    assert conv[2] == {"role": "tool", "tool_call_id": "call_0_0", "content": "40"}
    # the rollout is a valid agent conversation (as a prompt + completion row of the record)
    assert validate_row({"prompt": conv[:1], "completion": conv[1:], "label": True, "tools": TOOLS}) == []
    assert task_metrics(ARITH, conv) == {"success": 1.0, "tool_selection": 1.0, "argument_accuracy": 1.0,
                                         "invalid_call_rate": 0.0, "unnecessary_call_rate": 0.0, "turns": 2.0,
                                         "gold_total": 1.0}
    # an invalid call, a repeat of it, then a guess; the turn limit is never passed
    bad = scripted(block("calculator", {"expression": "12 x 3"}), block("calculator", {"expression": "12 x 3"}),
                   "The answer is 41.", "never asked")
    conv = rollout(bad, ARITH, max_turns=3)
    assert conv[2]["content"].startswith("error:") and len(conv) == 6
    m = task_metrics(ARITH, conv)
    assert (m["success"], m["invalid_call_rate"], m["unnecessary_call_rate"], m["turns"]) == (0.0, 1.0, 0.5, 3.0)
    assert m["argument_accuracy"] == 0.0 and m["tool_selection"] == 0.5
    loop = rollout(scripted(*[block("lookup", {"country": "Arvenia", "field": "capital"})] * 5), NO_TOOL, max_turns=2)
    assert sum(m["role"] == "assistant" for m in loop) == 2  # stopped by the turn limit, not by the policy
    assert task_metrics(NO_TOOL, loop)["unnecessary_call_rate"] == 1.0


def test_report_model_vs_baseline():
    good = scripted(block("calculator", {"expression": "12*3+4"}), "The answer is 40.")
    guess = scripted("The answer is 40.")  # right number, but no tool: not grounded, not a success
    r = evaluate_agent(good, guess, [ARITH, ARITH], num_bootstrap=200)
    assert r["model"]["success"] == 1.0 and r["baseline"]["success"] == 0.0
    assert r["delta"]["success"] == 1.0 and r["delta"]["success_ci95"] == [1.0, 1.0]
    assert r["delta"]["turns"] == 1.0 and r["baseline"]["argument_accuracy"] is None
    assert len(r["samples"]) == 2


def test_rollout_with_a_tiny_model():
    from preftune.models import load_policy, load_tokenizer

    policy = hf_policy(load_policy("tiny-llama").eval(), load_tokenizer("tiny-llama"), max_new_tokens=8)
    conv = rollout(policy, ARITH, max_turns=2)
    assert conv[0]["content"] == ARITH.prompt and conv[1]["role"] == "assistant"
    assert 1 <= sum(m["role"] == "assistant" for m in conv) <= 2
    assert 0.0 <= task_metrics(ARITH, conv)["gold_total"] <= 1.0
    assert policy(conv[:1]) == policy(conv[:1])  # greedy: the same text twice


@pytest.mark.parametrize("bad", [{"prompt": "x"}, {"task": {"category": "arithmetic"}}])
def test_read_tasks_names_the_line(tmp_path, bad):
    from preftune.eval.agent import read_tasks

    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"t.jsonl:1: task: missing"):
        read_tasks(str(p))
