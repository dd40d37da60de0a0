"""`preftune train rl`: online RL (GRPO, RLOO, PPO, online DPO) against verifiable rewards, reward models
or user functions, with a KL anchor to the reference.

    preftune train rl --algo grpo --model smollm2-135m --reward gold --prompts prompts.jsonl --out runs/grpo \
        lora.enabled=true num_generations=4
    accelerate launch -m preftune train rl ...     # the same run on several processes

Each step: the step's micro-batches of prompts are rolled out from the current weights (the prompt
prefilled once per group of G samples, models.rollout), scored (train.rewards), turned into advantages,
and trained on (train.rl_update) with the prefix-shared groups layout; then the usual skeleton logs,
evaluates (eval_data prompts scored by eval_reward, and by the training reward as `eval/proxy`, which the
over-optimisation guard compares), and checkpoints (the adaptive KL coefficient is saved with them).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from preftune.data.prompts import read_prompt_rows
from preftune.losses.rl import KLController
from preftune.models import load_policy, load_tokenizer
from preftune.models.rollout import HFRolloutEngine
from preftune.tokenize import tokenize_prompts
from preftune.train import stage
from preftune.train.configs import RLConfig
from preftune.train.optim import disable_dropout, optimizer_step, prepare_model
from preftune.train.plan import MetricSums
from preftune.train.rewards import RewardMix, parse_reward_spec
from preftune.train.rl_rollout import RolloutBatch, rollout_seed, score_rollout
from preftune.train.rl_update import Reference, RLModule, RLStep, micro_batch_loss, no_sync, prepare_update
from preftune.train.run import progress, warn

__all__ = ["RLConfig", "train_rl"]


def _reference(cfg: RLConfig, policy, accelerator) -> Reference:
    """The KL anchor: none without a KL term (and not online_dpo), the base with the adapter off for
    LoRA, else a frozen copy of the starting weights (never wrapped by DDP)."""
    if cfg.kl_coef == 0 and cfg.algo != "online_dpo":
        return Reference("none")
    if cfg.lora.enabled:
        return Reference("adapter")
    ref = load_policy(cfg.model, dtype=cfg.dtype)
    disable_dropout(ref)
    ref.to(accelerator.device).eval().requires_grad_(False)
    return Reference("model", ref)


def _judge_pairs(rb: RolloutBatch, prompts, judge) -> None:
    """Online DPO with a pairwise judge: samples 0 and 1 of each prompt compared; rewards 1 / 0.5 / 0."""
    G = rb.num_samples
    convs = [prompts[r].prompt for r in rb.rows]
    outcomes = judge.compare(convs, rb.texts[0::G], rb.texts[1::G])
    rewards = torch.full((rb.num_completions,), math.nan)
    for p, o in enumerate(outcomes):
        rewards[p * G], rewards[p * G + 1] = float(o), 1.0 - float(o)
    rb.rewards = rewards


def _rollout_metrics(sums: MetricSums, rb: RolloutBatch) -> None:
    ok = ~torch.isnan(rb.rewards)
    sums.add("reward", torch.nan_to_num(rb.rewards).sum(), ok.sum())
    sums.add("reward_std", _group_std(rb), len(rb.prompt_ids))
    for name, values in rb.components.items():
        v = torch.tensor(values, dtype=torch.float64)
        sums.add(f"rewards/{name}", torch.nan_to_num(v).sum(), (~torch.isnan(v)).sum())
    lengths = torch.tensor([len(c) for c in rb.completions], dtype=torch.float64)
    sums.add("completion_length", lengths.sum(), len(lengths))
    sums.add("truncated", rb.truncated.sum(), len(lengths))
    sums.add("tied_groups", rb.extra.get("num_tied", 0), len(rb.prompt_ids))
    m = rb.completion_mask()
    # entropy estimate: mean -log p of the sampled tokens (unbiased at temperature 1, no top-k/top-p)
    sums.add("entropy", -(rb.sampling_logps * m).sum(), m.sum())


def _group_std(rb: RolloutBatch) -> float:
    G, total = rb.num_samples, 0.0
    for p in range(len(rb.prompt_ids)):
        r = rb.rewards[p * G:(p + 1) * G]
        r = r[~torch.isnan(r)]
        total += float(r.std()) if r.numel() > 1 else 0.0
    return total


def evaluate(cfg: RLConfig, step: RLStep, engine, tokenizer, prompts, prompt_ids,
             scorers: dict[str, RewardMix]) -> dict:
    """One sample per held-out prompt (fixed seed, so steps differ only by the weights), scored by
    eval_reward (`eval/reward`) and by the training reward (`eval/proxy`)."""
    acc, sums = step.accelerator, MetricSums()
    rows = list(range(acc.process_index, len(prompts), acc.num_processes))
    for start in range(0, len(rows), max(cfg.batch_size, 1) * 4):
        part = rows[start:start + cfg.batch_size * 4]
        roll = engine.generate([prompt_ids[i] for i in part], 1, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                               cfg.top_k, seed=cfg.seed + 7919 * (start + 1), stop_ids=None)
        texts = tokenizer.batch_decode(roll.completions(), skip_special_tokens=True)
        convs = [prompts[i].prompt for i in part]
        for name, mix in scorers.items():
            columns = {k: [prompts[i].columns.get(k) for i in part]
                       for k in sorted({k for i in part for k in prompts[i].columns})}
            total = torch.tensor(mix.score(convs, texts, columns)[0], dtype=torch.float64)
            sums.add(name, torch.nan_to_num(total).sum(), (~torch.isnan(total)).sum())
        sums.add("completion_length", roll.completion_lengths.double().sum(), len(part))
    return sums.reduce(acc, "eval")


def _load_prompts(cfg: RLConfig, tokenizer, path: str):
    rows = read_prompt_rows(path)
    ids, report = tokenize_prompts([r.prompt for r in rows], tokenizer, cfg.max_length - cfg.max_new_tokens)
    return rows, ids, report


def train_rl(cfg: RLConfig, judge=None) -> Path:
    """Online RL with cfg.algo; `judge` is a pairwise judge (eval.judges) for a `judge:` reward. RUN/final."""
    # 1. config, data, rewards: every bad input fails before the run folder or the policy
    t_start = time.perf_counter()
    cfg.validate()
    cfg = stage.fit_max_length(cfg)
    pairwise = parse_reward_spec(cfg.reward)[0].kind == "judge"
    if pairwise and cfg.algo != "online_dpo":
        raise ValueError(f"reward {cfg.reward!r}: a pairwise judge gives no score per completion; use algo=online_dpo")
    if pairwise and judge is None:
        raise ValueError(f"reward {cfg.reward!r}: pass the judge (train_rl(cfg, judge=make_judge(spec)); the CLI does)")
    tokenizer = load_tokenizer(cfg.model)
    prompts, prompt_ids, report = _load_prompts(cfg, tokenizer, cfg.data)
    evals = _load_prompts(cfg, tokenizer, cfg.eval_data) if cfg.eval_data else None
    rewards = None if pairwise else RewardMix(cfg.reward, cfg.uncertainty_coef)
    scorers = {}
    if evals:
        scorers = {"reward": RewardMix(cfg.eval_reward)} | (
            {"proxy": rewards} if rewards is not None and cfg.reward != cfg.eval_reward else {})

    # 2. run folder, policy, reference, value head
    accelerator, run = stage.start(cfg, "rl")
    run.update_info(tokenization={"train": report.to_dict()}, algo=cfg.algo, reward=cfg.reward)
    if report.num_truncated:
        warn(f"{cfg.data}: {report.num_truncated} prompts cut to max_length - max_new_tokens tokens (their end kept)")
    policy = load_policy(cfg.model, dtype=cfg.dtype)
    disable_dropout(policy)  # the ratio and the KL compare the same function: no dropout noise
    ref = _reference(cfg, policy, accelerator)
    run.update_info(reference={"none": "none", "adapter": "adapter-disabled base", "model": "frozen copy"}[ref.mode])
    policy = prepare_model(policy, cfg)
    value_head = None
    if cfg.algo == "ppo":
        value_head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(value_head.weight)
        torch.nn.init.zeros_(value_head.bias)
    module = RLModule(policy, value_head, cfg.chunk_size, cfg.temperature)
    module, optimizer, scheduler, loader, num_steps, _ = stage.prepare(
        cfg, accelerator, module, [len(p) for p in prompt_ids], lambda mb: mb, updates_per_step=cfg.num_iterations)
    step, loader, state = stage.resume(cfg, accelerator, run, loader, scheduler)
    kl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    if "kl_controller" in state:
        kl.load_state_dict(state["kl_controller"])
    ctx = RLStep(cfg, module, ref, kl, tokenizer.pad_token_id, accelerator)
    engine = HFRolloutEngine(ctx.inner.policy, tokenizer)

    if evals and step == 0:  # the starting point of the held-out curve
        run.log(0, evaluate(cfg, ctx, engine, tokenizer, evals[0], evals[1], scorers))

    # 3. the loop: roll out the whole step, then num_iterations updates on it
    bar = progress(num_steps, f"rl {cfg.algo}", disable=not accelerator.is_main_process, initial=step)
    it, n_proc = iter(loader), accelerator.num_processes
    while step < num_steps:
        t0, batches, sums = time.perf_counter(), [], MetricSums()
        for slot in range(cfg.grad_accum):
            mb = next(it)
            seed = rollout_seed(cfg.seed, step, slot * n_proc + accelerator.process_index)
            roll = engine.generate([prompt_ids[i] for i in mb.rows], cfg.num_generations, cfg.max_new_tokens,
                                   cfg.temperature, cfg.top_p, cfg.top_k, seed=seed, stop_ids=None)
            rb = score_rollout(cfg, mb.rows, prompts, [prompt_ids[i] for i in mb.rows], roll, tokenizer, rewards)
            if pairwise:
                _judge_pairs(rb, prompts, judge)
            batches.append(rb)
        t_roll = time.perf_counter() - t0
        counts = prepare_update(ctx, batches)
        for rb in batches:
            _rollout_metrics(sums, rb)
        module.train()
        for _ in range(cfg.num_iterations):
            sums.add("loss", 0.0, 1.0 / n_proc)
            for slot, rb in enumerate(batches):
                with no_sync(ctx, slot == len(batches) - 1):
                    loss = micro_batch_loss(ctx, rb, counts, sums)
                    # accelerate divides by grad_accum and DDP averages over processes: each loss is already
                    # this micro-batch's share of the global mean
                    accelerator.backward(loss * cfg.grad_accum * n_proc)
            metrics = sums.reduce(accelerator, "train")
            grad_norm = optimizer_step(accelerator, module, optimizer, scheduler, cfg.max_grad_norm, step + 1,
                                       metrics.get("train/loss"), run)
            # rollout metrics are logged with the last update of the step only
            sums = MetricSums()
        step += 1
        if "train/kl" in metrics:
            kl.update(metrics["train/kl"] * metrics.get("train/completion_length", 1.0),
                      int(counts["completions"]))
        metrics |= {"train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0], "train/kl_coef": kl.coef,
                    "perf/samples_per_s": counts["completions"] / (time.perf_counter() - t0),
                    "perf/rollout_share": t_roll / (time.perf_counter() - t0)}
        if evals and stage.should_eval(cfg, step, num_steps):
            metrics |= evaluate(cfg, ctx, engine, tokenizer, evals[0], evals[1], scorers)
        if stage.should_log(cfg, step, num_steps):
            run.log(step, metrics)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics.get('train/reward', float('nan')):.3f}",
                        kl=f"{metrics.get('train/kl', 0):.3f}")
        stage.maybe_checkpoint(cfg, accelerator, run, step, num_steps, scheduler, {"kl_controller": kl.state_dict()})
    bar.close()

    # 4. final evaluation, checkpoint, model
    if evals:
        run.log(step, evaluate(cfg, ctx, engine, tokenizer, evals[0], evals[1], scorers))
    return stage.finish(cfg, accelerator, run, step, scheduler, policy, tokenizer, also_merged=cfg.merge_lora,
                        extra={"kl_controller": kl.state_dict()},
                        timing={"total_seconds": round(time.perf_counter() - t_start, 3)})
