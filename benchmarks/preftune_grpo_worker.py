"""preftune GRPO worker (run by preftune's venv): `train_rl(load_config(RLConfig, overrides=...))`.

Spec keys: as trl_grpo_worker.py. Prints `RESULT {json}`: step end times (rollout included), losses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import StepClock, emit, read_spec


def main() -> None:
    spec = read_spec()
    t_start = time.perf_counter()
    from preftune.config import load_config
    from preftune.train.rl import RLConfig, train_rl

    clock = StepClock().install()
    G = spec["num_generations"]
    overrides = [f"model={spec['model_path']}", f"data={spec['data_path']}", f"out={spec['out_dir']}",
                 "algo=grpo", "reward=py:grpo_reward:reward", f"batch_size={spec['prompts_per_step']}",
                 f"num_generations={G}", f"max_new_tokens={spec['max_new_tokens']}", "max_length=512",
                 f"max_steps={spec['max_steps']}", f"lr={spec['lr']}", f"seed={spec['seed']}",
                 f"kl_coef={spec['beta']}", f"loss_type={spec.get('loss_type', 'grpo')}", "temperature=1.0",
                 "overwrite=true", "log_every=1", "report_to=none", "warmup_ratio=0.0", "weight_decay=0.0",
                 "max_grad_norm=1.0", "scheduler=linear", "save_every=-1",
                 f"num_threads={spec.get('num_threads') or 0}", *spec.get("overrides", [])]
    cfg = load_config(RLConfig, overrides=overrides)
    setup = time.perf_counter() - t_start
    train_rl(cfg)
    rows = [json.loads(x) for x in (Path(spec["out_dir"]) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "train/loss" in r]
    emit({"contender": "preftune", "setup_s": setup, "first_losses": [r["train/loss"] for r in rows[:3]],
          "mean_lengths": [r["train/completion_length"] for r in rows],
          **clock.summary(spec["prompts_per_step"] * G, spec.get("warmup", 1)),
          "total_s": time.perf_counter() - t_start})


if __name__ == "__main__":
    main()
