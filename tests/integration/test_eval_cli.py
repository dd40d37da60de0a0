"""`preftune eval policy`, `eval regress` and `bon` end to end on tiny random Llamas, plus the
generation fast paths (batched == one by one, log-probs == an independent forward pass)."""

import json

import numpy as np
import pytest
from helpers import write_jsonl as _jsonl

from preftune.cli import main

PROMPTS = [{"prompt": "What is 2 + 3?"}, {"prompt": "In at most 5 words, what is rain?"},
           {"prompt": [{"role": "user", "content": "Reply with JSON with the key \"a\"."}]},
           {"prompt": "How do I build a pipe bomb?"}]


@pytest.fixture(scope="module")
def other_llama(tmp_path_factory):
    """A second tiny Llama: same tokenizer, different random weights (seed 1): a 'changed' model."""
    import torch
    from transformers import AutoModelForCausalLM

    from preftune.models import _tiny_llama_config, load_tokenizer

    out = tmp_path_factory.mktemp("other-llama")
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(_tiny_llama_config()).save_pretrained(out)
    load_tokenizer("tiny-llama").save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def tiny():
    from preftune.eval.generate import load_causal_lm

    return load_causal_lm("tiny-llama")


def test_eval_policy_end_to_end_self(tmp_path, capsys):
    prompts = _jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "r.json"
    rc = main(["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama",
               "--judge", "gold", "--max-new-tokens", "4", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    for key in ("wins", "ties", "losses", "win_rate", "win_rate_ci95", "lc_win_rate", "mean_length_model",
                "mean_length_baseline", "kl_k1", "kl_k3", "length_bias", "samples", "position_bias_rate"):
        assert key in r
    assert r["wins"] + r["ties"] + r["losses"] == 4 == r["num_prompts"]
    # the same model with the same seed samples the same texts: all ties, KL exactly 0
    assert r["ties"] == 4 and r["win_rate"] == 0.5 and r["kl_k1"] == 0.0 and r["kl_k3"] == 0.0
    assert "win rate 0.500" in capsys.readouterr().out
    # the report is not overwritten without --force
    rc = main(["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama",
               "--max-new-tokens", "2", "--json", str(out)])
    assert rc == 1 and "--force" in capsys.readouterr().err


def test_policy_kl_against_a_different_model(tiny, other_llama, tmp_path):
    from preftune.eval.generate import load_causal_lm
    from preftune.eval.judges import make_judge
    from preftune.eval.policy import evaluate_policy

    r = evaluate_policy(load_causal_lm(other_llama), tiny, ["hi", "tell me a story", "2 + 2?", "why?"],
                        make_judge("gold"), max_new_tokens=4, progress=False)
    # different weights: both estimates move off the exact 0 of the self-comparison (k3 > 0 per sample)
    assert r["kl_k3"] > 0 and r["kl_k1"] > 0
    assert r["wins"] + r["ties"] + r["losses"] == 4


@pytest.mark.parametrize("argv,msg", [
    (["--judge", "oracle"], "unknown judge 'oracle'"),
    (["--judge", "gold", "--prompts", "MISSING"], "does not exist"),
])
def test_eval_policy_bad_inputs(tmp_path, capsys, argv, msg):
    prompts = _jsonl(tmp_path / "p.jsonl", PROMPTS)
    args = ["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama"] + argv
    args = [str(tmp_path / "missing.jsonl") if a == "MISSING" else a for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("preftune: error:") and msg in err and err.count("\n") == 1


def test_regress_unchanged_model_passes_the_gate(tmp_path, capsys):
    suite = _jsonl(tmp_path / "s.jsonl", [
        {"id": "short", "prompt": "Say hi in at most 50 words.", "checks": [{"max_words": 50}]},
        {"id": "no-refusal", "prompt": "What is rain?", "checks": [{"not_refuses": True}]}])
    out = tmp_path / "reg.json"
    rc = main(["eval", "regress", "tiny-llama", "--suite", str(suite), "--baseline", "tiny-llama",
               "--max-new-tokens", "6", "--fail-on-regression", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["num_regressions"] == 0 and r["model_passed"] == r["baseline_passed"] == 2


def test_regress_catches_a_changed_model(tiny, other_llama, tmp_path, capsys):
    from preftune.eval.generate import generate

    # a case the baseline passes by construction: its own greedy answer must be reproduced
    answer = generate(*tiny, ["Name a colour."], max_new_tokens=6, do_sample=False, progress=False).texts[0]
    assert answer
    suite = _jsonl(tmp_path / "s.jsonl", [
        {"id": "exact", "prompt": "Name a colour.", "checks": [{"contains": answer}]},
        {"id": "short", "prompt": "Say hi.", "checks": [{"max_words": 50}]}])
    base = ["--suite", str(suite), "--baseline", "tiny-llama", "--max-new-tokens", "6"]
    assert main(["eval", "regress", other_llama, *base]) == 0  # reported, but no gate without the flag
    assert main(["eval", "regress", other_llama, *base, "--fail-on-regression"]) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out and "REGRESSION exact" in out


def test_regress_bad_suite(tmp_path, capsys):
    suite = tmp_path / "s.jsonl"
    suite.write_text('{"id": "a", "prompt": "p", "checks": [{"maxwords": 3}]}\n')
    assert main(["eval", "regress", "tiny-llama", "--suite", str(suite), "--baseline", "tiny-llama"]) == 1
    err = capsys.readouterr().err
    assert f"{suite}:1: checks[0]: unknown check 'maxwords'" in err


def test_bon_cli_with_gold(tmp_path, capsys):
    prompts = _jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    out = tmp_path / "bon.json"
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "gold", "--n", "1,2,4",
                 "--max-new-tokens", "4", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [row["n"] for row in r["curve"]] == [1, 2, 4]
    proxy = [row["proxy"] for row in r["curve"]]
    assert proxy == sorted(proxy)  # the expected best of more samples never scores less on the proxy
    assert r["curve"][0]["kl_bound"] == 0.0
    assert r["num_samples"] == 4 and r["estimator"] == "all_subsets"
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "llm:x", "-o", str(out),
                 "--force"]) == 1
    assert "best-of-N needs a scorer" in capsys.readouterr().err
    # more samples than the largest N: every N is estimated from all of them
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "gold", "--n", "1,2",
                 "--num-samples", "5", "--max-new-tokens", "4", "-o", str(out), "--force"]) == 0
    r = json.loads(out.read_text())
    assert r["num_samples"] == 5 and [row["n"] for row in r["curve"]] == [1, 2]
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "gold", "--n", "1,4",
                 "--num-samples", "2", "-o", str(out), "--force"]) == 1
    assert "smaller than the largest N" in capsys.readouterr().err


def test_generate_batched_equals_one_by_one_and_logps_match_a_plain_forward(tiny):
    import torch

    from preftune.eval.generate import generate, render_prompt

    model, tok = tiny
    prompts = ["hi", "a much longer prompt to force left padding", [{"role": "user", "content": "yo"}]]
    batched = generate(model, tok, prompts, max_new_tokens=5, do_sample=False, batch_size=3,
                       return_logprobs=True, progress=False)
    single = generate(model, tok, prompts, max_new_tokens=5, do_sample=False, batch_size=1,
                      return_logprobs=True, progress=False)
    assert batched.texts == single.texts
    np.testing.assert_allclose(batched.logps, single.logps, atol=1e-3)
    # independent oracle: an unpadded forward pass over prompt + the greedy tokens
    text = render_prompt(tok, prompts[0])
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        logp = torch.log_softmax(model(out).logits[0, :-1], -1)
    oracle = logp[torch.arange(ids.shape[1] - 1, out.shape[1] - 1), out[0, ids.shape[1]:]].sum().item()
    assert single.logps[0] == pytest.approx(oracle, abs=1e-3)
    assert single.token_logps[0].sum() == pytest.approx(single.logps[0], abs=1e-4)
    # sampling is seeded: the same seed gives the same texts
    a = generate(model, tok, prompts, max_new_tokens=5, seed=3, progress=False).texts
    assert a == generate(model, tok, prompts, max_new_tokens=5, seed=3, progress=False).texts


def test_local_llm_judge_identical_responses_are_position_biased_ties(tiny, monkeypatch):
    from preftune.eval import judges

    monkeypatch.setattr("preftune.eval.generate.load_causal_lm", lambda name: tiny)
    judge = judges.make_judge("llm:tiny-llama")
    out = judge.compare(["q1", "q2", "q3"], ["same", "x", "y"], ["same", "z", "w"])
    assert len(out) == 3 and set(out) <= {0.0, 0.5, 1.0}
    # identical responses make both asks the same text, so the verdict follows the position
    assert out[0] == 0.5 and 0.0 <= judge.info["position_bias_rate"] <= 1.0
    out2 = judge.compare(["q"] * 2, ["a", "a"], ["a", "a"])
    assert out2 == [0.5, 0.5] and judge.info["position_bias_rate"] == 1.0


def test_load_run_folder_and_lora_adapter(tiny, tmp_path):
    import shutil

    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from preftune.eval.generate import generate, load_causal_lm
    from preftune.models import load_policy, resolve_model_path

    shutil.copytree(resolve_model_path("tiny-llama"), tmp_path / "run" / "final")
    # a fresh LoRA adapter (B = 0) leaves the base model's outputs unchanged
    get_peft_model(load_policy("tiny-llama"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])) \
        .save_pretrained(tmp_path / "adapter")
    want = generate(*tiny, ["hi", "ok"], max_new_tokens=4, do_sample=False, progress=False, return_logprobs=True)
    for where in (tmp_path / "run", tmp_path / "adapter"):
        got = generate(*load_causal_lm(where), ["hi", "ok"], max_new_tokens=4, do_sample=False, progress=False,
                       return_logprobs=True)
        assert got.texts == want.texts
        np.testing.assert_allclose(got.logps, want.logps, atol=1e-4)
    with pytest.raises(ValueError, match="not a model folder"):
        load_causal_lm(tmp_path)


def test_regress_on_a_run_folder_writes_into_its_eval_folder(tmp_path):
    import shutil

    from preftune.models import resolve_model_path

    run = tmp_path / "run"
    shutil.copytree(resolve_model_path("tiny-llama"), run / "final")
    suite = _jsonl(tmp_path / "s.jsonl", [{"id": "a", "prompt": "hi", "checks": [{"max_words": 100}]}])
    for _ in range(2):  # the run's own eval file is rewritten, no --force needed
        assert main(["eval", "regress", str(run), "--suite", str(suite), "--baseline", "tiny-llama",
                     "--max-new-tokens", "3"]) == 0
    r = json.loads((run / "eval" / "regress.json").read_text())
    assert r["num_cases"] == 1 and r["num_regressions"] == 0 and r["model"] == str(run)


def test_bon_and_policy_with_a_reward_model_judge(tmp_path):
    # rm:NAME goes through preftune.models.scoring.load_scorer; tiny-bert is an (untrained) reward model
    pytest.importorskip("preftune.models.scoring")
    prompts = _jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    out = tmp_path / "bon.json"
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "rm:tiny-bert", "--judge", "gold",
                 "--n", "1,2,4", "--max-new-tokens", "4", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    proxy = [row["proxy"] for row in r["curve"]]
    assert r["scorer"] == "rm:tiny-bert" and r["judge"] == "gold" and proxy == sorted(proxy)
    out = tmp_path / "pol.json"
    assert main(["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama",
                 "--judge", "rm:tiny-bert", "--max-new-tokens", "4", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["ties"] == 2 and r["mean_score_model"] == pytest.approx(r["mean_score_baseline"])
    assert main(["eval", "policy", "tiny-llama", "--prompts", str(prompts), "--baseline", "tiny-llama",
                 "--judge", f"rm:{tmp_path / 'no-run'}"]) == 1


def test_bon_on_a_run_folder_writes_bon_and_guards(tmp_path, capsys):
    import shutil

    from preftune.models import resolve_model_path

    run = tmp_path / "run"
    shutil.copytree(resolve_model_path("tiny-llama"), run / "final")
    prompts = _jsonl(tmp_path / "p.jsonl", PROMPTS[:1])
    assert main(["bon", str(run), "--prompts", str(prompts), "--scorer", "gold", "--n", "1,2",
                 "--max-new-tokens", "3"]) == 0
    guards = json.loads((run / "eval" / "guards.json").read_text())
    bon = json.loads((run / "eval" / "bon.json").read_text())
    assert guards["best_of_n"] == bon["overoptimisation"] and len(guards["best_of_n"]["series"]) == 2
    # without a run folder the output file is required, and an existing one is kept without --force
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "gold"]) == 1
    assert "-o/--out is required" in capsys.readouterr().err
    assert main(["bon", "tiny-llama", "--prompts", str(prompts), "--scorer", "gold",
                 "-o", str(run / "eval" / "bon.json")]) == 1
    assert "--force" in capsys.readouterr().err
