"""`preftune train sft`: supervised fine-tuning with the loss on completion tokens only.

    preftune train sft --model smollm2-135m --data chat.jsonl --out runs/sft
    preftune train sft --model smollm2-135m --data pairs.jsonl --out runs/sft   # the chosen side of pairs

Rows: `{"messages": [...]}` (the last assistant turn is the completion, everything before it the
prompt), `{"prompt", "completion"}` (an unpaired row with `label: false` is not imitated; such rows
are counted in run.json), or pairs (prompt + chosen). The loss is the mean NLL over the completion
tokens of each optimiser step's global batch. layout=packed puts several sequences in one row with a
block-diagonal causal mask and positions restarting per sequence (no padding computed).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from preftune.batching import collate_sequences_packed, collate_sequences_padded, num_train_tokens, to_device
from preftune.data.io import iter_raw
from preftune.data.records import PairRecord, UnpairedRecord, parse_row
from preftune.models import load_policy, load_tokenizer
from preftune.models.forward import ForwardModule
from preftune.tokenize import tokenize_completions
from preftune.train import stage
from preftune.train.configs import SFTConfig
from preftune.train.optim import optimizer_step, prepare_model
from preftune.train.plan import MetricSums, eval_batches
from preftune.train.run import progress, warn

__all__ = ["SFTConfig", "load_sft_data", "read_sft_rows", "train_sft"]


# --------------------------------------------------------------------------- data

def read_sft_rows(path: str, with_tools: bool = False) -> tuple[list[tuple], dict]:
    """(prompt, completion) conversations of every usable row (with_tools: (prompt, completion, the row's
    `tools`) for agent rows); ValueError naming FILE:LINE: field."""
    rows, counts, errors = [], {"num_undesirable_skipped": 0}, []
    for raw in iter_raw(path):
        if raw.error is not None:
            errors.append(f"{raw.where}: {raw.error}")
            continue
        row = raw.row
        if isinstance(row, dict) and "messages" in row:
            msgs = row["messages"]
            last = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"),
                       default=None) if isinstance(msgs, list) else None
            if last is None or last == 0:
                errors.append(f"{raw.where}: messages: needs a user turn followed by an assistant turn")
                continue
            row = {"prompt": msgs[:last], "completion": msgs[last:last + 1], "label": True,
                   **({"tools": row["tools"]} if row.get("tools") is not None else {})}
        elif isinstance(row, dict) and "completion" in row and "label" not in row:
            row = {**row, "label": True}  # plain prompt/completion rows are demonstrations
        rec, probs = parse_row(row)
        if probs:
            errors += [f"{raw.where}: {p}" for p in probs]
        elif isinstance(rec, PairRecord):
            rows.append((rec.prompt, rec.chosen, rec.tools) if with_tools else (rec.prompt, rec.chosen))
        elif isinstance(rec, UnpairedRecord):
            if rec.label:
                rows.append((rec.prompt, rec.completion, rec.tools) if with_tools else (rec.prompt, rec.completion))
            else:
                counts["num_undesirable_skipped"] += 1
        else:
            errors.append(f"{raw.where}: row: a rated row has no single completion to imitate")
    if errors:
        raise ValueError(f"{path}: {len(errors)} problem(s); nothing was trained:\n" + "\n".join(errors[:20]))
    if not rows:
        raise ValueError(f"{path}: no rows to train on")
    return rows, counts


def load_sft_data(path: str, tokenizer, cfg: SFTConfig):
    rows, counts = read_sft_rows(path, with_tools=True)
    try:
        items, report = tokenize_completions([r[0] for r in rows], [r[1] for r in rows], tokenizer,
                                             max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                                             on_overlong=cfg.on_overlong, train_on=cfg.train_on,
                                             tools=[r[2] for r in rows])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not items:
        raise ValueError(f"{path}: no rows left after tokenisation ({report.summary()})")
    return items, report, counts


def make_sft_collate(cfg: SFTConfig, pad_id: int, attn_impl: str):
    if cfg.layout == "packed" and attn_impl == "sdpa":
        budget = cfg.pack_tokens or cfg.max_length
        return lambda items: collate_sequences_packed(items, pad_id, budget)
    return lambda items: collate_sequences_padded(items, pad_id)


# --------------------------------------------------------------------------- evaluation and the loop

def evaluate_sft(module, items: list, collate, cfg: SFTConfig, accelerator) -> dict:
    """eval/loss (mean NLL per completion token) and eval/ppl over the held-out set."""
    sums = MetricSums()
    inner = accelerator.unwrap_model(module)
    inner.eval()
    with torch.no_grad():
        for rows in eval_batches([len(it.prompt_ids) + len(it.completion_ids) for it in items], cfg.batch_size,
                                 accelerator.process_index, accelerator.num_processes):
            out = inner(to_device(collate([items[i] for i in rows]), accelerator.device))
            sums.add("loss", -out.logps.sum(), out.num_tokens.sum())
    inner.train()
    m = sums.reduce(accelerator, "eval")
    if "eval/loss" in m:
        m["eval/ppl"] = math.exp(min(m["eval/loss"], 50.0))
    return m


def train_sft(cfg: SFTConfig) -> Path:
    """Supervised fine-tuning on completion tokens; returns RUN/final."""
    # 1. config and data, before any model is loaded
    cfg.validate()
    cfg = stage.fit_max_length(cfg)
    tokenizer = load_tokenizer(cfg.model)
    items, report, counts = load_sft_data(cfg.data, tokenizer, cfg)
    eval_items = load_sft_data(cfg.eval_data, tokenizer, cfg)[0] if cfg.eval_data else None

    # 2. run folder, accelerator, model
    accelerator, run = stage.start(cfg, "sft")
    run.update_info(tokenization={"train": report.to_dict()}, **counts)
    if report.num_truncated or report.num_dropped:
        warn(f"training data: {report.summary()}")
    policy = load_policy(cfg.model, dtype=cfg.dtype)
    attn = getattr(policy.config, "_attn_implementation", "eager")
    collate = make_sft_collate(cfg, tokenizer.pad_token_id, attn)
    # packing needs a 4D block mask, which only SDPA takes here; other attention kernels get padding
    run.update_info(layout="packed" if cfg.layout == "packed" and attn == "sdpa" else "padded")
    policy = prepare_model(policy, cfg)
    module = ForwardModule(policy, "logps", chunk_size=cfg.chunk_size, return_tokens=True)

    # 3. plan: the loss of a step is the mean NLL over its global batch's completion tokens, so each
    # micro-batch's summed NLL is scaled by (micro-batches per step) / (completion tokens in the step)
    parts = cfg.grad_accum * accelerator.num_processes
    step_tokens: dict[int, int] = {}

    def collate_mb(mb):
        return collate([items[i] for i in mb.rows]), parts / step_tokens[mb.step]

    module, optimizer, scheduler, loader, num_steps, plan = stage.prepare(
        cfg, accelerator, module, [len(it.prompt_ids) + len(it.completion_ids) for it in items], collate_mb)
    for mb in plan:
        step_tokens[mb.step] = step_tokens.get(mb.step, 0) + sum(num_train_tokens(items[i]) for i in mb.rows)
    step, loader, _ = stage.resume(cfg, accelerator, run, loader, scheduler)

    # 4. train
    bar = progress(num_steps, "sft", disable=not accelerator.is_main_process, initial=step)
    sums = MetricSums()
    module.train()
    for batch, scale in loader:
        with accelerator.accumulate(module):
            out = module(to_device(batch, accelerator.device))
            nll = -out.logps.sum()
            accelerator.backward(nll * scale)
            sums.add("loss", nll.detach(), out.num_tokens.sum())
            sums.add("lengths/completion", out.num_tokens.float().sum(), out.num_tokens.numel())
            if not accelerator.sync_gradients:
                continue
            metrics = sums.reduce(accelerator, "train")
            grad_norm = optimizer_step(accelerator, module, optimizer, scheduler, cfg.max_grad_norm, step + 1,
                                       metrics.get("train/loss"), run)
        step += 1
        metrics |= {"train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0]}
        if stage.should_log(cfg, step, num_steps):
            run.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if eval_items and stage.should_eval(cfg, step, num_steps):
            run.log(step, evaluate_sft(module, eval_items, collate, cfg, accelerator))
        stage.maybe_checkpoint(cfg, accelerator, run, step, num_steps, scheduler)
    bar.close()

    # 5. final evaluation, checkpoint, model
    if eval_items:
        run.log(step, evaluate_sft(module, eval_items, collate, cfg, accelerator))
    return stage.finish(cfg, accelerator, run, step, scheduler, policy, tokenizer, also_merged=cfg.merge_lora)
