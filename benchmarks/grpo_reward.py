"""The reward both GRPO contenders train on (benchmarks/grpo_vs_trl.py): the same function is given to TRL
(`reward_funcs=`) and to preftune (`reward=py:grpo_reward:reward`), so both score alike at the same cost
(TRL's venv has no preftune, hence no gold scorer)."""

from __future__ import annotations


def _text(x):
    if isinstance(x, list):  # TRL's conversational completions: [{"role": "assistant", "content": ...}]
        return " ".join(m.get("content", "") for m in x if isinstance(m, dict))
    return str(x)


def reward(prompts, completions, **columns):
    """Words in the completion, capped at 40, / 40: cheap, deterministic, and differs between samples."""
    return [min(len(_text(c).split()), 40) / 40 for c in completions]
