"""The tool-use world: the tools, the gold scorer on hand-written trajectories (exact scores), and the
generated pairs (valid for `data check`, chosen above rejected under gold on every pair)."""

import json

import pytest

from preftune.cli import main
from preftune.data.io import read_records
from preftune.data.validate import check_file
from preftune.world.agent import AgentTask, generate_agent_world, score_step, score_trajectory
from preftune.world.agent.generate import _Pair, score_pair
from preftune.world.agent.gold import compare
from preftune.world.agent.tasks import QUESTIONS, split_of
from preftune.world.agent.tools import calculate, convert, execute, search


def test_tools_execute():
    assert calculate("(2 + 3) * 4") == 20.0 and calculate("2 ^ 10") == 1024.0
    with pytest.raises(ValueError):
        calculate("__import__('os').system('true')")
    assert execute("calculator", {"expression": "1 / 0"}).startswith("error:")
    assert convert(3.5, "km", "m") == 3500.0 and execute("convert_units", {"value": 2, "from_unit": "lb",
                                                                           "to_unit": "kg"}) == "0.9072"
    assert execute("convert_units", {"value": 1, "from_unit": "kg", "to_unit": "m"}) == (
        "error: cannot convert mass to length")
    assert execute("lookup", {"country": "arvenia", "field": "capital"}) == "Tolsk"
    assert execute("lookup", {"country": "Atlantis", "field": "capital"}).startswith("error:")
    for doc, question, answer in QUESTIONS:  # every question's query finds its document, which holds the answer
        assert search(question.rstrip("?").replace(",", "")) == doc
        assert answer in execute("search_docs", {"query": question})


ARITH = AgentTask("arithmetic", "What is 12 * 3 + 4?",
                  [{"name": "calculator", "arguments": {"expression": "12 * 3 + 4"}}], "40", True)
NO_TOOL = AgentTask("no_tool", "Write the word 'river' backwards.", [], "revir", False)
USER = [{"role": "user", "content": ARITH.prompt}]


def call(cid, expression, name="calculator", key="expression"):
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps({key: expression})}}]}


def result(cid, content):
    return {"role": "tool", "tool_call_id": cid, "content": content}


def answer(text):
    return {"role": "assistant", "content": text}


def _scores(s):
    return {k: (round(v, 6) if v is not None else None) for k, v in s.items() if k != "steps"}


def test_gold_of_hand_written_trajectories():
    good = USER + [call("c1", "12 * 3 + 4"), result("c1", "40"), answer("The answer is 40.")]
    assert _scores(score_trajectory(ARITH, good)) == {"tool_choice": 1.0, "arguments": 1.0, "answer": 1.0,
                                                      "grounded": 1.0, "efficiency": 1.0, "stopping": 1.0, "total": 1.0}
    # right by luck, without the tool: the 40 comes from nowhere (not grounded), the tool was not chosen
    guess = USER + [answer("The answer is 40.")]
    assert _scores(score_trajectory(ARITH, guess)) == {"tool_choice": 0.0, "arguments": None, "answer": 1.0,
                                                       "grounded": 0.0, "efficiency": 1.0, "stopping": 1.0,
                                                       "total": 0.6}
    wrong = USER + [call("c1", "12 + 3 + 4"), result("c1", "19"), answer("The answer is 19.")]
    assert _scores(score_trajectory(ARITH, wrong)) == {"tool_choice": 1.0, "arguments": 0.5, "answer": 0.0,
                                                       "grounded": 1.0, "efficiency": 1.0, "stopping": 1.0,
                                                       "total": 0.75}
    repeat = good[:3] + [call("c2", "12 * 3 + 4"), result("c2", "40"), answer("The answer is 40.")]
    assert _scores(score_trajectory(ARITH, repeat)) == {"tool_choice": 0.5, "arguments": 1.0, "answer": 1.0,
                                                        "grounded": 1.0, "efficiency": 0.5, "stopping": 0.0,
                                                        "total": 0.666667}
    # an invalid call (the tool answers with an error), then the right one
    retry = USER + [call("c1", "12 x 3 + 4"), result("c1", execute("calculator", {"expression": "12 x 3 + 4"})),
                    call("c2", "12*3+4"), result("c2", "40"), answer("The answer is 40.")]
    assert _scores(score_trajectory(ARITH, retry)) == {"tool_choice": 0.5, "arguments": 0.5, "answer": 1.0,
                                                       "grounded": 1.0, "efficiency": 1.0, "stopping": 1.0,
                                                       "total": 0.833333}
    fabricated = USER + [answer("<tool_response>40</tool_response>\nThe answer is 40.")]
    assert score_trajectory(ARITH, fabricated)["grounded"] == 0.0
    # the prompt's own number is grounded but is not the answer (a misused result)
    misused = good[:3] + [answer("The answer is 12.")]
    assert (_scores(score_trajectory(ARITH, misused))["answer"] == 0.0
            and score_trajectory(ARITH, misused)["grounded"] == 1.0)
    assert len(score_trajectory(ARITH, retry)["steps"]) == 3


def test_gold_of_a_no_tool_task():
    user = [{"role": "user", "content": NO_TOOL.prompt}]
    assert score_trajectory(NO_TOOL, user + [answer("revir")])["total"] == 1.0
    extra = user + [call("c1", NO_TOOL.prompt, "search_docs", "query"), result("c1", "[doc-1] ..."), answer("revir")]
    assert _scores(score_trajectory(NO_TOOL, extra)) == {"tool_choice": 0.0, "arguments": None, "answer": 1.0,
                                                         "grounded": 1.0, "efficiency": 0.5, "stopping": 0.0,
                                                         "total": 0.5}


def test_gold_per_step():
    after = USER + [call("c1", "12 * 3 + 4"), result("c1", "40")]
    assert _scores(score_step(ARITH, USER, call("c1", "12*3 + 4"))) == {
        "tool_choice": 1.0, "arguments": 1.0, "answer": None, "grounded": None, "efficiency": 1.0, "stopping": 1.0,
        "total": 1.0}
    assert _scores(score_step(ARITH, USER, answer("The answer is 41."))) == {
        "tool_choice": 0.0, "arguments": None, "answer": 0.0, "grounded": 0.0, "efficiency": None, "stopping": None,
        "total": 0.0}
    assert _scores(score_step(ARITH, after, call("c2", "12 * 3 + 4"))) == {
        "tool_choice": 0.0, "arguments": None, "answer": None, "grounded": None, "efficiency": 0.0, "stopping": 0.0,
        "total": 0.0}
    assert _scores(score_step(ARITH, after, answer("The answer is 12."))) == {
        "tool_choice": 1.0, "arguments": None, "answer": 0.0, "grounded": 1.0, "efficiency": None, "stopping": 1.0,
        "total": 0.75}
    assert score_step(ARITH, USER, call("c1", "12 * 3 + 4", "lookup", "country"))["tool_choice"] == 0.0


@pytest.fixture(scope="module")
def world():
    return generate_agent_world(60, 18, seed=3)


def test_generated_pairs_pass_data_check_and_gold_ranks_chosen_first(world, tmp_path):
    from preftune.data.io import write_rows

    for split in ("train", "test"):
        path = tmp_path / f"{split}.jsonl"
        write_rows(world[split], path)
        assert check_file(path) == []
        for rec in read_records(path):  # rescored from the row alone: its task and its conversations
            task = AgentTask.from_dict(rec.extra["task"])
            sc, sr = score_pair(task, _Pair(rec.extra["level"], rec.extra["flaw"], rec.prompt, rec.chosen,
                                            rec.rejected))
            assert sc["total"] > sr["total"] and rec.margin == pytest.approx(sc["total"] - sr["total"])
            assert rec.attributes == compare(sc, sr) and "chosen" in rec.attributes.values()
            assert rec.tools and rec.category == task.category
    s = world["summary"]
    assert s["intent_mismatches"] == 0 and s["num_train"] == 120 and set(s["levels"]) == {"step", "trajectory"}
    assert {r.extra["flaw"] for r in world["train"]} >= {"wrong_tool", "wrong_arguments", "skipped_tool",
                                                         "repeat_call", "misused_result", "unnecessary_call"}
    train_prompts = {r.prompt[0]["content"] for r in world["train"]}
    test_prompts = {r.prompt[0]["content"] for r in world["test"]}
    assert not train_prompts & test_prompts and all(split_of(p) == "test" for p in test_prompts)
    # deterministic for a seed
    again = generate_agent_world(60, 18, seed=3)
    assert [r.to_dict() for r in again["train"]] == [r.to_dict() for r in world["train"]]


def test_cli_writes_the_agent_world(tmp_path, capsys):
    out = tmp_path / "aw"
    assert main(["data", "world", "--agent", "-o", str(out), "--num-tasks", "12", "--num-test-tasks", "6"]) == 0
    assert "train.jsonl (24 pairs" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "tasks_test.jsonl", "test.jsonl", "train.jsonl"]
    tasks = [json.loads(x) for x in (out / "tasks_test.jsonl").read_text().splitlines()]
    assert len(tasks) == 6 and all(AgentTask.from_dict(t["task"]).prompt == t["prompt"][0]["content"] for t in tasks)
    assert main(["data", "world", "--agent", "-o", str(out)]) == 1  # not empty, no --force
    assert "is not empty; pass --force" in capsys.readouterr().err
