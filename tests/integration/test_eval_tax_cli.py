"""`eval policy --tax-samples N`: the alignment tax in the JSON report, model vs baseline."""

import json

from helpers import write_jsonl

from preftune.cli import main


def test_policy_report_holds_the_tax(tmp_path, capsys, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}, {"prompt": "Name a colour."}])
    out = tmp_path / "r.json"
    rc = main(["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama",
               "--max-new-tokens", "4", "--json", str(out), "--tax-samples", "2"])
    assert rc == 0
    tax = json.loads(out.read_text())["tax"]
    keys = {"distinct_1", "distinct_2", "self_bleu", "mean_token_entropy", "arithmetic_accuracy",
            "reference_perplexity"}
    assert set(tax["model"]) == set(tax["baseline"]) == set(tax["delta"]) == keys
    assert tax["model"] == tax["baseline"] and all(v == 0 for v in tax["delta"].values())  # one model: no tax
    assert tax["settings"]["num_samples"] == 2
    assert "alignment tax (model - baseline): distinct_1 +0.0000" in capsys.readouterr().out
    rc = main(["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama",
               "--tax-samples", "1", "--json", str(tmp_path / "x.json")])
    assert rc == 1 and "--tax-samples must be 0 (off) or at least 2" in capsys.readouterr().err


def test_policy_agent_rollouts_from_the_cli(tmp_path, capsys):
    world = tmp_path / "aw"
    assert main(["data", "world", "--agent", "-o", str(world), "--num-tasks", "6", "--num-test-tasks", "3"]) == 0
    out = tmp_path / "agent.json"
    rc = main(["eval", "policy", "tiny-llama", "--agent", "--prompts", str(world / "tasks_test.jsonl"),
               "--baseline", "tiny-llama", "--max-new-tokens", "8", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["num_tasks"] == 3 and len(r["samples"]) == 3
    assert r["model"] == r["baseline"] and r["delta"]["success"] == 0.0  # one greedy model against itself
    assert "tool-use tasks" in capsys.readouterr().out
