"""`preftune data constitutional`: the three steps see what they must (the critique the answer and the principle,
the revision the critique), the rows are the revision over the answer with the principle as rationale, a
revision equal to its answer is listed as skipped (never dropped silently), and the outputs pass `data check`
and the SFT reader. A scripted model stands in for the LM (what is tested is the procedure); one run on
tiny-llama checks the real plumbing."""

from __future__ import annotations

import json

from label_support import write_jsonl

from preftune.cli import main
from preftune.eval import generate as gen
from preftune.label.ai import load_constitution
from preftune.label.constitutional import constitutional_rows


def test_rows_from_texts_by_hand():
    principles = load_constitution()[:2]
    pairs, sft, skipped = constitutional_rows(
        [[{"role": "user", "content": "q0"}], [{"role": "user", "content": "q1"}]], ["f:1", "f:2"], principles,
        initial=["bad answer", "same"], critiques=[" too short ", "fine"], revisions=[" better answer ", "same"],
        source="constitutional:m")
    assert pairs == [{"id": "f:1:cai", "prompt": [{"role": "user", "content": "q0"}],
                      "chosen": [{"role": "assistant", "content": "better answer"}],
                      "rejected": [{"role": "assistant", "content": "bad answer"}],
                      "rationale": f"helpfulness: {principles[0].question}", "attributes": {"helpfulness": "chosen"},
                      "source": "constitutional:m", "critique": "too short"}]
    assert sft == [{"prompt": [{"role": "user", "content": "q0"}],
                    "completion": [{"role": "assistant", "content": "better answer"}]}]
    assert skipped == [{"where": "f:2", "reason": "the revision is identical to the answer"}]


class _Scripted:
    """generate() of a fake model: answers "answer N", critiques "critique N", revises to "revised N" except
    for prompt 1, whose revision repeats the answer."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, tok, prompts, *, desc="generate", **kw):
        self.calls.append((desc, list(prompts), kw))
        texts = {"answer": [f"answer {i}" for i in range(len(prompts))],
                 "critique": [f"critique {i}" for i in range(len(prompts))],
                 "revise": [f"revised {i}" if i != 1 else "answer 1" for i in range(len(prompts))]}[desc]
        return gen.Generation(texts=texts, num_tokens=None)


def test_cli_procedure_with_a_scripted_model(tmp_path, monkeypatch, capsys):
    scripted = _Scripted()
    monkeypatch.setattr(gen, "generate", scripted)
    monkeypatch.setattr(gen, "load_causal_lm", lambda name: (None, None))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Question {i}?"} for i in range(3)])
    out = tmp_path / "cai.jsonl"
    args = ["data", "constitutional", "--model", "fake", "--prompts", str(prompts), "-o", str(out)]
    assert main(args) == 0
    (d1, answer_prompts, kw1), (d2, critique_prompts, kw2), (d3, revise_prompts, kw3) = scripted.calls
    assert (d1, d2, d3) == ("answer", "critique", "revise")
    assert answer_prompts == [[{"role": "user", "content": f"Question {i}?"}] for i in range(3)]
    assert kw1["temperature"] == 0.7 and kw2["do_sample"] is False and kw3["do_sample"] is False
    names = [p.name for p in load_constitution()]
    questions = {p.name: p.question for p in load_constitution()}
    for i, (c, r) in enumerate(zip(critique_prompts, revise_prompts)):
        principle = names[i % len(names)]  # round robin
        assert f"Question {i}?" in c and f"answer {i}" in c and questions[principle] in c
        assert f"critique {i}" in r and f"answer {i}" in r and questions[principle] in r
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["chosen"][0]["content"] for r in rows] == ["revised 0", "revised 2"]
    assert [r["rejected"][0]["content"] for r in rows] == ["answer 0", "answer 2"]
    assert [r["rationale"].split(":")[0] for r in rows] == [names[0], names[2]]
    skipped = [json.loads(x) for x in (tmp_path / "cai.jsonl.skipped.jsonl").read_text().splitlines()]
    assert skipped == [{"where": f"{prompts}:2", "reason": "the revision is identical to the answer"}]
    assert "1 prompt(s) gave no pair" in capsys.readouterr().err
    assert main(["data", "check", str(out)]) == 0

    from preftune.train.sft import read_sft_rows

    sft_rows, _ = read_sft_rows(str(tmp_path / "cai.jsonl.sft.jsonl"))
    assert [c[0]["content"] for _, c in sft_rows] == ["revised 0", "revised 2"]
    assert main(args) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(args[:-2] + ["-o", str(tmp_path / "x.jsonl"), "--principle", "wit"]) == 1
    assert "--principle 'wit' is not in the constitution" in capsys.readouterr().err


def test_cli_on_tiny_llama(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Name a colour, {i}."} for i in range(3)])
    out = tmp_path / "cai.jsonl"
    code = main(["data", "constitutional", "--model", "tiny-llama", "--prompts", str(prompts), "-o", str(out),
                 "--max-new-tokens", "8", "--principle", "style"])
    err = capsys.readouterr().err
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    skipped_file = tmp_path / "cai.jsonl.skipped.jsonl"
    num_skipped = len(skipped_file.read_text().splitlines()) if skipped_file.exists() else 0
    assert len(rows) + num_skipped == 3  # every prompt is a pair or a listed skip
    assert all(r["attributes"] == {"style": "chosen"} and r["source"] == "constitutional:tiny-llama" for r in rows)
    assert main(["data", "check", str(out)]) == 0
