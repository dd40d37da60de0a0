"""TRL DPOTrainer worker (run by benchmarks/.trl-venv/bin/python; never imported by preftune).

Spec keys: model_path, ref_path (None: TRL builds its reference from model_path), data_path (jsonl of
chat messages), batch_size, max_length, max_steps, warmup, lr, beta, loss_type, label_smoothing,
precompute (bool), seed, out_dir, gradient_checkpointing, bf16, num_threads.
Prints `RESULT {json}`: step times, the reference pass time (precompute), first-step losses, pairs
kept, padding share of the policy's forward passes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import StepClock, TokenCounter, emit, read_spec


def main() -> None:
    spec = read_spec()
    t_start = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    if spec.get("num_threads"):
        torch.set_num_threads(spec["num_threads"])
    clock = StepClock().install()
    rows = [json.loads(x) for x in Path(spec["data_path"]).read_text().splitlines() if x.strip()]
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(spec["ref_path"], dtype=torch.float32) if spec.get("ref_path") else None
    counter = TokenCounter()
    counter.watch(model.base_model)
    clock.watch_forward(model)

    ref_pass = {"s": 0.0}
    original = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *a, **k):
        t, c = time.perf_counter(), time.process_time()
        out = original(self, *a, **k)
        ref_pass["s"] += time.perf_counter() - t
        ref_pass["cpu_s"] = ref_pass.get("cpu_s", 0.0) + time.process_time() - c
        return out

    DPOTrainer._precompute_ref_logps = timed_precompute
    losses: list[float] = []

    class Recording(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = out[0] if isinstance(out, tuple) else out
            if model.training:
                losses.append(float(loss.detach()))
            return out

    args = DPOConfig(
        output_dir=spec["out_dir"], per_device_train_batch_size=spec["batch_size"], max_length=spec["max_length"],
        learning_rate=spec["lr"], seed=spec["seed"], max_steps=spec["max_steps"], logging_steps=1,
        save_strategy="no", report_to="none", gradient_checkpointing=spec.get("gradient_checkpointing", False),
        bf16=spec.get("bf16", False), beta=spec.get("beta", 0.1), loss_type=[spec.get("loss_type", "sigmoid")],
        label_smoothing=spec.get("label_smoothing", 0.0), precompute_ref_log_probs=spec.get("precompute", False),
        dataloader_num_workers=0, disable_tqdm=True, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, use_cpu=True)
    result: dict = {"contender": "trl", "num_pairs_in": len(rows)}
    trainer = Recording(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                        processing_class=tok)
    kept = len(trainer.train_dataset)
    result.update(num_pairs_kept=kept, num_pairs_dropped=len(rows) - kept, setup_s=time.perf_counter() - t_start,
                  ref_pass_s=ref_pass["s"],
                  ref_pass_cpu_s=ref_pass.get("cpu_s", 0.0))
    trainer.train()
    steps = len(clock.step_ends)
    result.update(clock.summary(spec["batch_size"], spec.get("warmup", 1), min(kept, steps * spec["batch_size"])),
                  **counter.summary(), first_losses=losses[:3], total_s=time.perf_counter() - t_start)
    emit(result)


if __name__ == "__main__":
    main()
