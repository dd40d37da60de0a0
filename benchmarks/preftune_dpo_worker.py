"""preftune DPO worker (run by preftune's venv): `train_dpo(load_config(DPOConfig, overrides=...))`.

Spec keys: model_path, ref_path (None: the policy's starting weights), data_path, batch_size,
max_length, max_steps, warmup, lr, beta, loss_type, label_smoothing, reference (model | cache), seed,
out_dir, overrides (extra key=value strings).
Prints `RESULT {json}`: step times, the reference-cache pass time, first-step losses, tokenisation
counts and the padding share of the batches the model computed on.
"""

from __future__ import annotations

import time

from common import (
    StepClock,
    emit,
    padding_share,
    preftune_overrides,
    read_preftune_run,
    read_spec,
    scratch_dir,
)


def main() -> None:
    spec = read_spec()
    t_start = time.perf_counter()
    from preftune import batching, models
    from preftune.config import load_config
    from preftune.train import refcache
    from preftune.train.dpo import DPOConfig, train_dpo

    clock = StepClock().install()
    pads = {"real": 0, "computed": 0}

    def counting(fn):
        def wrapped(*a, **k):
            b = fn(*a, **k)
            pads["computed"] += b.input_ids.numel()
            pads["real"] += b.input_ids.numel() - b.num_pad_tokens
            return b
        return wrapped

    # dpo.make_collate imports these at call time, so patching the module attributes is enough
    for name in ("collate_pairs_padded", "collate_pairs_shared", "collate_pairs_packed"):
        setattr(batching, name, counting(getattr(batching, name)))

    ref_pass = {"s": 0.0}
    compute = refcache.compute_ref_logps

    def timed_compute(*a, **k):
        t, c = time.perf_counter(), time.process_time()
        out = compute(*a, **k)
        ref_pass["s"] += time.perf_counter() - t
        ref_pass["cpu_s"] = ref_pass.get("cpu_s", 0.0) + time.process_time() - c
        return out

    refcache.compute_ref_logps = timed_compute
    load = models.load_policy
    watched = {"done": False}

    def load_and_watch(*a, **k):
        model = load(*a, **k)
        if not watched["done"]:  # the first model loaded is the policy
            clock.watch_forward(model)
            watched["done"] = True
        return model

    models.load_policy = load_and_watch
    overrides = preftune_overrides(
        spec, f"beta={spec.get('beta', 0.1)}", f"loss={spec.get('loss_type', 'sigmoid')}",
        f"label_smoothing={spec.get('label_smoothing', 0.0)}", f"reference={spec.get('reference', 'model')}",
        f"ref_cache_dir={scratch_dir('ptc-refcache-')}",  # a fresh cache: the pass is always counted
        "save_every=-1")
    if spec.get("ref_path"):
        overrides.append(f"ref_model={spec['ref_path']}")
    train_dpo(load_config(DPOConfig, overrides=overrides))
    rows, info, tok, num_in = read_preftune_run(spec)
    steps = len(clock.step_ends)
    kept = num_in - int(tok.get("num_dropped", 0))
    result = {"contender": "preftune", "num_pairs_in": num_in, "num_pairs_kept": kept,
              "num_pairs_dropped": int(tok.get("num_dropped", 0)), "num_pairs_truncated": tok.get("num_truncated"),
              "ref_pass_s": ref_pass["s"], "ref_pass_cpu_s": ref_pass.get("cpu_s", 0.0),
              "first_losses": [r.get("train/loss") for r in rows[:3]],
              "real_tokens": pads["real"], "computed_positions": pads["computed"],
              "padding_share": padding_share(pads["real"], pads["computed"]),
              "reference_cache": info.get("reference_cache"),
              "total_s": time.perf_counter() - t_start, "config": overrides}
    result.update(clock.summary(spec["batch_size"], spec.get("warmup", 1), min(kept, steps * spec["batch_size"])))
    emit(result)


if __name__ == "__main__":
    main()
