"""TRL RewardTrainer worker (run by benchmarks/.trl-venv/bin/python; never imported by preftune).

Spec keys: model_path, data_path (jsonl: plain strings or chat messages), batch_size, max_length,
max_steps (-1 = one epoch), warmup, lr, seed, eos_token (None or e.g. "[SEP]"), out_dir,
gradient_checkpointing, num_threads (0 = torch default), prebatched (optional JSON path holding the
exact first-batch tensors another worker fed its model: then TRL trains one step on exactly those).
Prints `RESULT {json}` with step times, first-step losses, pairs kept / dropped, padding share.
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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    if spec.get("num_threads"):
        torch.set_num_threads(spec["num_threads"])
    clock = StepClock().install()
    rows = [json.loads(x) for x in Path(spec["data_path"]).read_text().splitlines() if x.strip()]
    num_in = len(rows)
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model_path"], num_labels=1,
                                                               dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    counter = TokenCounter()
    counter.watch(model.base_model, keep_first=True)
    clock.watch_forward(model)

    collator = None
    prebatched = spec.get("prebatched")
    if prebatched:
        batch = json.loads(Path(prebatched).read_text())
        tensors = {k: torch.tensor(v) for k, v in batch.items()}
        half = tensors["input_ids"].shape[0] // 2
        ids, mask = tensors["input_ids"], tensors["attention_mask"]
        rows = [{"chosen_ids": ids[i][mask[i].bool()].tolist(),
                 "rejected_ids": ids[half + i][mask[half + i].bool()].tolist()} for i in range(half)]
        num_in = len(rows)

        def collator(examples):  # the exact tensors the other side computed on (incl. token_type_ids)
            return {k: v.clone() for k, v in tensors.items()}

    args = RewardConfig(
        output_dir=spec["out_dir"], per_device_train_batch_size=spec["batch_size"],
        max_length=spec["max_length"], learning_rate=spec["lr"], seed=spec["seed"],
        max_steps=spec.get("max_steps", -1), num_train_epochs=1, logging_steps=1, save_strategy="no",
        report_to="none", gradient_checkpointing=spec.get("gradient_checkpointing", False),
        eos_token=spec.get("eos_token"), dataloader_num_workers=0, disable_tqdm=True,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        use_cpu=True, dataset_num_proc=None, bf16=spec.get("bf16", False))
    losses: list[float] = []

    class Recording(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = out[0] if isinstance(out, tuple) else out
            if model.training:
                losses.append(float(loss.detach()))
            return out

    result: dict = {"contender": "trl", "num_pairs_in": num_in}
    try:
        trainer = Recording(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tok, data_collator=collator)
    except (TypeError, ValueError, AttributeError) as e:  # the crash users hit (BERT without EOS) is a result
        emit({**result, "ok": False, "crash": f"{type(e).__name__}: {e}"[:400]})
        return
    kept = len(trainer.train_dataset)
    result.update(num_pairs_kept=kept, num_pairs_dropped=num_in - kept,
                  setup_s=time.perf_counter() - t_start)
    trainer.train()
    steps = len(clock.step_ends)
    if spec.get("capture_batch") and counter.first_inputs:
        Path(spec["capture_batch"]).write_text(json.dumps(counter.first_inputs))
    pairs_trained = min(kept, steps * spec["batch_size"])
    result.update(clock.summary(spec["batch_size"], spec.get("warmup", 1), pairs_trained),
                  **counter.summary(), first_losses=losses[:3], total_s=time.perf_counter() - t_start)
    emit(result)


if __name__ == "__main__":
    main()
