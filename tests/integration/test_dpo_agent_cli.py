"""`train dpo` on the tool-use world's agent pairs through the CLI: it runs, and the policy's log-probs are
summed over the continuation's assistant tokens only (tool results inside a trajectory do not count)."""

from __future__ import annotations

import torch
from helpers import read_run

from preftune.batching import train_positions
from preftune.cli import main
from preftune.data.io import read_records, write_rows
from preftune.models import load_policy, load_tokenizer
from preftune.tokenize import tokenize_pairs
from preftune.world.agent import generate_agent_world


def _logps(model, it, side: str, masked: bool) -> float:
    resp, mask = getattr(it, f"{side}_ids"), getattr(it, f"{side}_mask")
    ids = torch.tensor([it.prompt_ids + resp])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    pos = (train_positions(len(it.prompt_ids), it.prompt_mask, len(resp), mask) if masked
           else range(len(it.prompt_ids), len(ids[0])))
    return float(sum(logp[t - 1, ids[0, t]] for t in pos))


def test_dpo_on_agent_pairs_trains_only_the_continuation(tmp_path, capsys):
    world = generate_agent_world(6, 0, seed=5)
    rows = [r for r in world["train"] if r.extra["level"] == "trajectory"][:4]
    rows += [r for r in world["train"] if r.extra["level"] == "step"][:4]
    data = tmp_path / "agent.jsonl"
    write_rows(rows, data)
    out = tmp_path / "run"
    rc = main(["train", "dpo", "model=tiny-llama", f"data={data}", f"out={out}", "max_steps=1", "batch_size=8",
               "max_length=1024", "report_to=none", "save_every=-1", "lr=1e-3"])
    assert rc == 0, capsys.readouterr().err
    metrics, run = read_run(out)
    step1 = next(m for m in metrics if "train/logps/chosen" in m)
    assert run["tokenization"]["train"]["num_truncated"] == 0 and run["tokenization"]["train"]["num_rows"] == 8
    # the oracle: the starting model's log-probs over the masked tokens, averaged over the 8 pairs
    tok, model = load_tokenizer("tiny-llama"), load_policy("tiny-llama").eval()
    items, _ = tokenize_pairs(read_records(data), tok, 1024)
    with torch.no_grad():
        masked = [_logps(model, it, "chosen", True) for it in items]
        whole = [_logps(model, it, "chosen", False) for it in items]
    assert abs(step1["train/logps/chosen"] - sum(masked) / 8) < 1e-3
    assert abs(sum(whole) / 8 - sum(masked) / 8) > 1.0  # the tool results would have counted otherwise
    # trajectory pairs hold tool results inside chosen: those tokens are masked out, none of the prompt trains
    assert any(0 in it.chosen_mask for it in items) and all(sum(it.prompt_mask) == 0 for it in items)
