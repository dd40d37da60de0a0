"""preftune reward-model worker (run by preftune's venv): `train_rm(load_config(RMConfig, overrides=...))`.

Spec keys: model_path, data_path, batch_size, max_length, max_steps (-1 = one epoch), warmup, lr,
seed, out_dir, overrides (extra key=value strings), capture_batch (optional path: write the first
batch's model inputs there as JSON, for TRL to train one step on exactly the same tensors).
Prints `RESULT {json}` with step times, first-step losses (metrics.jsonl), tokenisation counts and
the padding share of what the model computed on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import (
    StepClock,
    TokenCounter,
    emit,
    padding_share,
    preftune_overrides,
    read_preftune_run,
    read_spec,
)


def main() -> None:
    spec = read_spec()
    t_start = time.perf_counter()
    from preftune import batching, models
    from preftune.config import load_config
    from preftune.train.rm import RMConfig, train_rm

    clock = StepClock().install()
    pads = {"real": 0, "computed": 0, "batches": 0}
    captured: dict = {}
    # encoders run each collated batch in unpadded chunks: what they compute is counted at the model's
    # forward (TokenCounter below); decoders compute the collated rows as they are
    forward_counter = TokenCounter()

    def counting(fn):
        def wrapped(*a, **k):
            b = fn(*a, **k)
            pads["computed"] += b.input_ids.numel()
            pads["real"] += b.input_ids.numel() - b.num_pad_tokens
            pads["batches"] += 1
            if spec.get("capture_batch") and not captured and b.attention_mask.dim() == 2:
                # the first micro-batch as collated (parity runs use micro_tokens=0: one piece)
                captured.update({key: getattr(b, key).tolist() for key in
                                 ("input_ids", "attention_mask", "token_type_ids", "position_ids")
                                 if getattr(b, key) is not None})
            return b
        return wrapped

    # rm.make_collate imports these at call time, so patching the module attributes is enough
    for name in ("collate_pairs_padded", "collate_pairs_shared", "collate_pairs_packed"):
        setattr(batching, name, counting(getattr(batching, name)))

    load = models.load_reward_model
    encoder = {}

    def load_and_watch(*a, **k):
        model = load(*a, **k)
        clock.watch_forward(model)
        encoder["yes"] = models.is_encoder(model.config)
        if encoder["yes"]:
            forward_counter.watch(model)
        return model

    models.load_reward_model = load_and_watch
    overrides = preftune_overrides(spec)
    train_rm(load_config(RMConfig, overrides=overrides))
    rows, _, tok, num_in = read_preftune_run(spec)
    steps = len(clock.step_ends)
    if spec.get("capture_batch"):
        Path(spec["capture_batch"]).write_text(json.dumps(captured))
    result = {"contender": "preftune", "num_pairs_in": num_in, "tokenization": tok,
              "num_pairs_kept": num_in - int(tok.get("num_dropped", 0)),
              "num_pairs_dropped": int(tok.get("num_dropped", 0)), "num_pairs_truncated": tok.get("num_truncated"),
              "first_losses": [r.get("train/loss") for r in rows[:3]],
              **({"real_tokens": forward_counter.real, "computed_positions": forward_counter.computed,
                  "padding_share": padding_share(forward_counter.real, forward_counter.computed),
                  "forward_calls": forward_counter.calls} if encoder.get("yes") else
                 {"real_tokens": pads["real"], "computed_positions": pads["computed"],
                  "padding_share": padding_share(pads["real"], pads["computed"])}),
              "total_s": time.perf_counter() - t_start, "config": overrides}
    kept = result["num_pairs_kept"]
    result.update(clock.summary(spec["batch_size"], spec.get("warmup", 1), min(kept, steps * spec["batch_size"])))
    emit(result)


if __name__ == "__main__":
    main()
