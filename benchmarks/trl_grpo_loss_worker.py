"""TRL GRPOTrainer loss on one fixed rollout batch (run by benchmarks/.trl-venv/bin/python; never imported
by preftune). Spec keys: model_path, ref_path (None when beta = 0), batch {prompt_ids, completions, pad, G},
advantages, loss_type, beta, max_new_tokens, out_dir,
use_bias_correction_kl (TRL's default True). Prints `RESULT {json}`: loss, grad_norm."""

from __future__ import annotations

from common import emit, read_spec


def main() -> None:
    spec = read_spec()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    b = spec["batch"]
    G, pad = b["G"], b["pad"]
    tok = AutoTokenizer.from_pretrained(spec["model_path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    args = GRPOConfig(output_dir=spec["out_dir"], per_device_train_batch_size=len(b["completions"]),
                      num_generations=G, max_completion_length=spec["max_new_tokens"], temperature=1.0,
                      beta=spec["beta"], loss_type=spec["loss_type"], scale_rewards="group", epsilon=0.2,
                      num_iterations=1, report_to="none", use_cpu=True, bf16=False, disable_dropout=True,
                      save_strategy="no", log_completions=False,
                      use_bias_correction_kl=spec.get("use_bias_correction_kl", True))
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_list([{"prompt": "x"}] * G), processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this does not run
    prompts = [p for p in b["prompt_ids"] for _ in range(G)]
    comps = b["completions"]
    L = max(len(c) for c in comps)
    prompt_ids = torch.tensor(prompts)
    completion_ids = torch.tensor([c + [pad] * (L - len(c)) for c in comps])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (L - len(c)) for c in comps])
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": torch.tensor(spec["advantages"]),
              "num_items_in_batch": completion_mask.sum()}
    model = trainer.model
    model.train()
    if spec["beta"] > 0:
        # TRL built its reference (a copy of the policy, prepared for its fused LM head): give it the weights
        ref = trainer.ref_model
        ref.load_state_dict(AutoModelForCausalLM.from_pretrained(spec["ref_path"], dtype=torch.float32).state_dict())
        ref.eval()
        with torch.no_grad():
            inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(
                ref, torch.cat([prompt_ids, completion_ids], 1),
                torch.cat([inputs["prompt_mask"], completion_mask], 1), L)[0]
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    grad_norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    emit({"contender": "trl", "loss": float(loss.detach()), "grad_norm": float(grad_norm)})


if __name__ == "__main__":
    main()
