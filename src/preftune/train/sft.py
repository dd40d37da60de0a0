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

from dataclasses import dataclass
from pathlib import Path

from preftune.config import opt
from preftune.train.common import TrainConfig
from preftune.train.loop import add_train_parser, config_from_args, warn

SFT_LAYOUTS = ("packed", "padded")


@dataclass
class SFTConfig(TrainConfig):
    layout: str = opt("packed", "packed (several sequences per row, no padding) | padded")
    pack_tokens: int = opt(0, "layout=packed: tokens per packed row (0 = max_length)")
    chunk_size: int = opt(1024, "completion tokens per LM-head chunk (bounds the logits memory)")
    merge_lora: bool = opt(False, "with LoRA: also write RUN/final/merged, the base with the adapter folded in")

    def validate(self) -> None:
        super().validate()
        if self.layout not in SFT_LAYOUTS:
            raise ValueError(f"layout: must be one of {', '.join(SFT_LAYOUTS)}, got {self.layout!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


# --------------------------------------------------------------------------- data

def read_sft_rows(path: str) -> tuple[list[tuple[list, list]], dict]:
    """(prompt, completion) conversations of every usable row; ValueError naming FILE:LINE: field."""
    from preftune.data.io import iter_raw
    from preftune.data.records import PairRecord, UnpairedRecord, parse_row

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
            row = {"prompt": msgs[:last], "completion": msgs[last:last + 1], "label": True}
        elif isinstance(row, dict) and "completion" in row and "label" not in row:
            row = {**row, "label": True}  # plain prompt/completion rows are demonstrations
        rec, probs = parse_row(row)
        if probs:
            errors += [f"{raw.where}: {p}" for p in probs]
        elif isinstance(rec, PairRecord):
            rows.append((rec.prompt, rec.chosen))
        elif isinstance(rec, UnpairedRecord):
            if rec.label:
                rows.append((rec.prompt, rec.completion))
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
    from preftune.tokenize import tokenize_completions

    rows, counts = read_sft_rows(path)
    try:
        items, report = tokenize_completions([p for p, _ in rows], [c for _, c in rows], tokenizer,
                                             max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length,
                                             on_overlong=cfg.on_overlong)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not items:
        raise ValueError(f"{path}: no rows left after tokenisation ({report.summary()})")
    return items, report, counts


def collate_sequences_packed(items: list, pad_id: int, max_tokens: int):
    """Padding-free SequenceBatch: sequences packed first-fit-decreasing into rows of <= max_tokens
    (a longer one gets its own row), each attending causally to itself only, positions from 0.
    attention_mask is (R, 1, T, T) bool (True = may attend), the form SDPA takes."""
    import torch

    from preftune.batching import SequenceBatch

    lengths = [len(it.prompt_ids) + len(it.completion_ids) for it in items]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(items)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if r is None:
            rows.append([])
            room.append(max_tokens)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    R, T = len(rows), max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    pos = torch.zeros((R, T), dtype=torch.long)
    unit = torch.zeros((R, T), dtype=torch.long)  # 1 + slot of the sequence in its row; 0 = pad
    comp = torch.zeros((R, T), dtype=torch.bool)
    g_index, g_labels, g_segment, last = [], [], [], [0] * len(items)
    for r, row in enumerate(rows):
        s = 0
        for slot, i in enumerate(row):
            it, n, p = items[i], lengths[i], len(items[i].prompt_ids)
            ids[r, s:s + n] = torch.tensor(it.prompt_ids + it.completion_ids, dtype=torch.long)
            pos[r, s:s + n] = torch.arange(n)
            unit[r, s:s + n] = slot + 1
            comp[r, s + p:s + n] = True
            base = r * T + s
            g_index += range(base + p - 1, base + n - 1)  # position t - 1 predicts token t
            g_labels += it.completion_ids
            g_segment += [i] * (n - p)
            last[i] = base + n - 1
            s += n
    same = (unit.unsqueeze(2) == unit.unsqueeze(1)) & (unit.unsqueeze(2) > 0)
    mask = (same & torch.ones(T, T, dtype=torch.bool).tril()) | (torch.eye(T, dtype=torch.bool) & (unit == 0).unsqueeze(2))
    t = torch.tensor
    return SequenceBatch(ids, mask.unsqueeze(1), pos, comp, None, t(g_index, dtype=torch.long),
                         t(g_labels, dtype=torch.long), t(g_segment, dtype=torch.long), t(last, dtype=torch.long),
                         len(items), int((unit == 0).sum()), [it.index for it in items])


def make_sft_collate(cfg: SFTConfig, pad_id: int, attn_impl: str):
    from preftune.batching import collate_sequences_padded

    if cfg.layout == "packed" and attn_impl == "sdpa":
        budget = cfg.pack_tokens or cfg.max_length
        return lambda items: collate_sequences_packed(items, pad_id, budget)
    return lambda items: collate_sequences_padded(items, pad_id)


# --------------------------------------------------------------------------- evaluation and the loop

def evaluate_sft(module, items: list, collate, cfg: SFTConfig, accelerator) -> dict:
    """eval/loss (mean NLL per completion token) and eval/ppl over the held-out set."""
    import math

    import torch

    from preftune.train.loop import MetricSums, eval_batches, to_device

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
    import time

    from preftune.models import load_policy, load_tokenizer
    from preftune.train.common import (
        build_optimizer,
        load_checkpoint,
        make_accelerator,
        progress,
        save_checkpoint,
        truncate_metrics,
    )
    from preftune.train.loop import (
        MetricSums,
        logps_module,
        make_loader,
        num_steps_for,
        open_run,
        optimizer_step,
        plan_micro_batches,
        prepare_policy,
        save_final_model,
        to_device,
    )

    # 1. config and data, before any model is loaded
    cfg.validate()
    tokenizer = load_tokenizer(cfg.model)
    items, report, counts = load_sft_data(cfg.data, tokenizer, cfg)
    eval_items = load_sft_data(cfg.eval_data, tokenizer, cfg)[0] if cfg.eval_data else None

    # 2. run folder, accelerator, model
    accelerator = make_accelerator(cfg)
    run = open_run(cfg, "sft", accelerator)
    run.update_info(tokenization={"train": {"num_rows": report.num_rows, "num_truncated": report.num_truncated,
                                            "num_dropped": report.num_dropped}}, **counts)
    if report.num_truncated or report.num_dropped:
        warn(f"training data: {report.summary()}")
    policy = load_policy(cfg.model, dtype=cfg.dtype)
    attn = getattr(policy.config, "_attn_implementation", "eager")
    collate = make_sft_collate(cfg, tokenizer.pad_token_id, attn)
    # packing needs a 4D block mask, which only SDPA takes here; other attention kernels get padding
    run.update_info(layout="packed" if cfg.layout == "packed" and attn == "sdpa" else "padded")
    policy = prepare_policy(policy, cfg)
    module = logps_module(policy, cfg.chunk_size)

    # 3. plan: the loss of a step is the mean NLL over its global batch's completion tokens, so each
    # micro-batch's summed NLL is scaled by (micro-batches per step) / (completion tokens in the step)
    num_steps = num_steps_for(cfg, len(items), accelerator.num_processes)
    plan = plan_micro_batches([len(it.prompt_ids) + len(it.completion_ids) for it in items], cfg.batch_size,
                              cfg.grad_accum, accelerator.num_processes, num_steps, cfg.seed)
    step_tokens: dict[int, int] = {}
    for mb in plan:
        step_tokens[mb.step] = step_tokens.get(mb.step, 0) + sum(len(items[i].completion_ids) for i in mb.rows)
    parts = cfg.grad_accum * accelerator.num_processes
    loader = make_loader(plan, lambda mb: (collate([items[i] for i in mb.rows]), parts / step_tokens[mb.step]))
    optimizer, scheduler = build_optimizer(module, cfg, num_steps)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)  # stepped by hand, once per optimiser step
    step = 0
    if cfg.resume:
        step = int(load_checkpoint(accelerator, cfg.out)["step"])
        truncate_metrics(run, step)
        loader = accelerator.skip_first_batches(loader, step * cfg.grad_accum)

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
            grad_norm = optimizer_step(accelerator, module, optimizer, scheduler, cfg.max_grad_norm)
        step += 1
        metrics = sums.reduce(accelerator, "train") | {"train/grad_norm": grad_norm,
                                                       "train/lr": scheduler.get_last_lr()[0]}
        if step % cfg.log_every == 0 or step == num_steps:
            run.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if eval_items and cfg.eval_every and step % cfg.eval_every == 0 and step < num_steps:
            run.log(step, evaluate_sft(module, eval_items, collate, cfg, accelerator))
        if cfg.save_every > 0 and step % cfg.save_every == 0 and step < num_steps:
            save_checkpoint(accelerator, run, step, cfg.keep_checkpoints)
    bar.close()

    # 5. final evaluation, checkpoint, model
    if eval_items:
        run.log(step, evaluate_sft(module, eval_items, collate, cfg, accelerator))
    if cfg.save_every >= 0:
        save_checkpoint(accelerator, run, step, cfg.keep_checkpoints)
    final = save_final_model(accelerator, policy, tokenizer, run, cfg.merge_lora)
    run.update_info(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), num_steps=step)
    run.close()
    return final


def register(sub) -> None:
    add_train_parser(sub, "sft", "supervised fine-tuning on chat rows, prompt/completion rows or chosen responses",
                     SFTConfig, run_sft)


def run_sft(args) -> int:
    final = train_sft(config_from_args(SFTConfig, args))
    print(f"final model: {final}")
    return 0

