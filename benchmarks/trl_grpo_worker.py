"""TRL GRPOTrainer worker (run by benchmarks/.trl-venv/bin/python; never imported by preftune).

Spec keys: model_path, data_path (jsonl of {"prompt": [messages]}), prompts_per_step, num_generations,
max_new_tokens, max_steps, lr, beta, loss_type, seed, out_dir, num_threads, warmup.
Prints `RESULT {json}`: step end times (generation included: TRL generates inside the step), losses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import StepClock, emit, read_spec
from grpo_reward import reward


def main() -> None:
    spec = read_spec()
    t_start = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    if spec.get("num_threads"):
        torch.set_num_threads(spec["num_threads"])
    clock = StepClock().install()
    rows = [json.loads(x) for x in Path(spec["data_path"]).read_text().splitlines() if x.strip()]
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    G = spec["num_generations"]
    args = GRPOConfig(
        output_dir=spec["out_dir"], per_device_train_batch_size=spec["prompts_per_step"] * G, num_generations=G,
        max_completion_length=spec["max_new_tokens"], temperature=1.0, top_p=1.0, top_k=0, beta=spec["beta"],
        loss_type=spec.get("loss_type", "grpo"), scale_rewards="group", epsilon=0.2, num_iterations=1,
        learning_rate=spec["lr"], seed=spec["seed"], max_steps=spec["max_steps"], logging_steps=1,
        save_strategy="no", report_to="none", bf16=False, use_cpu=True, disable_tqdm=True,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, shuffle_dataset=False,
        dataloader_num_workers=0, disable_dropout=True, log_completions=False,
        gradient_checkpointing=spec.get("gradient_checkpointing", False))
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tok)
    setup = time.perf_counter() - t_start
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    lengths = [h.get("completions/mean_length") for h in trainer.state.log_history if "loss" in h]
    emit({"contender": "trl", "setup_s": setup, "first_losses": losses[:3], "mean_lengths": lengths,
          **clock.summary(spec["prompts_per_step"] * G, spec.get("warmup", 1)),
          "total_s": time.perf_counter() - t_start})


if __name__ == "__main__":
    main()
