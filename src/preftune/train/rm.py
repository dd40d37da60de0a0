"""Reward-model training: `preftune train rm --model M --data TRAIN --out RUN [key=value ...]`.

One visible loop (`train_rm`): records -> pairs (rated rows become pairs with a margin) -> tokens
(every pair truncated with a count or dropped with a report) -> length-grouped micro-batches
(prefix-shared rows for decoders, padded rows for encoders) -> Bradley-Terry on the overall head,
per-attribute heads masked where a row states no verdict, ensembles as bootstrap-weighted heads or
as separately trained members. Every micro-batch's loss is a SUM over its pairs divided by the count
of pairs in the whole accumulation window, so 1 x 4 pairs and 4 x 1 pair give the same update.

Score columns of the model: member e, head j (j = 0 overall, then the attributes) is column
e * (1 + A) + j. RUN/final/preftune_rm.json records the heads, weights and ensemble for `load_scorer`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from preftune.batching import pair_length, to_device
from preftune.data.pairs import load_pairs
from preftune.models import is_encoder, load_reward_model, load_tokenizer, resolve_model_path
from preftune.models.forward import ForwardModule
from preftune.train import stage
from preftune.train.configs import EnsembleConfig, RMConfig
from preftune.train.optim import disable_dropout, optimizer_step, prepare_model
from preftune.train.plan import eval_batches
from preftune.train.rm_data import (
    MISSING,
    VERDICT_CODES,
    PairData,
    RMBatch,
    bootstrap_weights,
    counted_per_batch,
    make_collate,
    prepare_pairs,
    resolve_heads,
)
from preftune.train.rm_loss import Tally, rm_loss
from preftune.train.run import progress

# --------------------------------------------------------------------------- the loop

def _layout(cfg: RMConfig, encoder: bool) -> str:
    if cfg.layout in ("shared", "packed") and encoder:
        raise ValueError(f"layout={cfg.layout} needs a decoder: an encoder sees the whole row (use layout=padded)")
    return cfg.layout if cfg.layout != "auto" else ("padded" if encoder else "shared")


def _check_model(name: str):
    """Tokenizer + encoder flag, with one clear error before any training starts."""
    path = resolve_model_path(name)
    tok_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")
    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in tok_files):
        # transformers would build an empty tokenizer from config.json alone and fail much later
        raise ValueError(f"model folder {path} has no tokenizer (none of {', '.join(tok_files)}); "
                         "save the tokenizer next to the model (tokenizer.save_pretrained)")
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise ValueError(f"model folder {path} has no config.json")
    tok = load_tokenizer(name)
    if len(tok) == 0:
        raise ValueError(f"the tokenizer of {name!r} ({path}) has an empty vocabulary")
    try:
        encoder = is_encoder(name)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the model config of {name!r} ({path}): {e}") from e
    return tok, encoder


def rm_info(cfg: RMConfig, heads: list[str], encoder: bool, num_ensemble_heads: int, members=None) -> dict:
    names = ["overall", *heads]
    weights = [float(cfg.head_weights.get(h, 0.0)) for h in names] if cfg.head_weights else [1.0] + [0.0] * len(heads)
    unknown = set(cfg.head_weights) - set(names)
    if unknown:
        raise ValueError(f"head_weights: unknown head(s) {sorted(unknown)}; heads are {names}")
    return {"format": 1, "heads": names, "head_weights": weights, "encoder": encoder,
            "max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length,
            "ensemble": {"size": cfg.ensemble.size, "mode": cfg.ensemble.mode,
                         "num_heads": num_ensemble_heads}, "members": members or [], "base_model": cfg.model}


def train_rm(cfg: RMConfig) -> Path:
    """Train a reward model (or an ensemble) and return RUN/final."""
    if cfg.ensemble.size > 1 and cfg.ensemble.mode == "members":
        return _train_members(cfg)
    return _train_one(cfg)


def _train_members(cfg: RMConfig) -> Path:
    """K models with seeds seed..seed+K-1 (their own init and data order) under RUN/members/k."""
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"run folder {out} exists and is not empty; pass resume=true or overwrite=true")
    finals = []
    for k in range(cfg.ensemble.size):
        sub = replace(cfg, out=str(out / "members" / str(k)), seed=cfg.seed + k,
                      ensemble=replace(cfg.ensemble, size=1), eval_data=cfg.eval_data)
        done = Path(sub.out) / "final" / "preftune_rm.json"
        # resume: members already finished are kept as they are
        finals.append(Path(sub.out) / "final" if done.exists() and cfg.resume else _train_one(sub))
    from preftune.config import save_config

    tok, _ = _check_model(cfg.model)
    member_info = json.loads((finals[0] / "preftune_rm.json").read_text())
    final = out / "final"
    final.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tok.save_pretrained(final)
    info = {**member_info, "ensemble": {"size": cfg.ensemble.size, "mode": "members", "num_heads": 1},
            "members": [f"../members/{k}/final" for k in range(cfg.ensemble.size)]}
    (final / "preftune_rm.json").write_text(json.dumps(info, indent=2))
    _merge_member_metrics(out, cfg.ensemble.size)
    (out / "run.json").write_text(json.dumps({"stage": "rm", "model": cfg.model, "ensemble": info["ensemble"],
                                              "members": [str(f) for f in finals],
                                              "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    return final


def _merge_member_metrics(out: Path, k: int) -> None:
    """RUN/metrics.jsonl: member 0's rows as they are, other members' keys under members/<k>/."""
    rows: dict[int, dict] = {}
    for m in range(k):
        path = out / "members" / str(m) / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            r = json.loads(line)
            dst = rows.setdefault(r["step"], {"step": r["step"]})
            dst.update({(key if m == 0 else f"members/{m}/{key}"): v for key, v in r.items() if key != "step"})
    (out / "metrics.jsonl").write_text("".join(json.dumps(rows[s]) + "\n" for s in sorted(rows)))


def _train_one(cfg: RMConfig) -> Path:
    # 1. everything that can fail on user input, before the run folder or the model
    tok, encoder = _check_model(cfg.model)
    cfg = stage.fit_max_length(cfg)
    layout = _layout(cfg, encoder)
    records, counts = load_pairs(cfg.data, cfg.rated_min_margin)
    eval_records = load_pairs(cfg.eval_data, cfg.rated_min_margin)[0] if cfg.eval_data else None
    heads = resolve_heads(cfg.heads, records)
    E = cfg.ensemble.size if cfg.ensemble.mode == "heads" else 1
    info = rm_info(cfg, heads, encoder, E)
    data = prepare_pairs(records, tok, cfg, heads, encoder)
    if not data.items:
        raise ValueError(f"{cfg.data}: every pair was dropped ({data.report.summary()})")
    eval_data = prepare_pairs(eval_records, tok, cfg, heads, encoder) if eval_records else None

    accelerator, run = stage.start(cfg, "rm")
    tok_report = {"train": data.report.to_dict(**counts)} | ({"eval": eval_data.report.to_dict()} if eval_data else {})
    run.update_info(tokenization=tok_report, rm=info)
    if accelerator.is_main_process and (data.report.num_truncated or data.report.num_dropped):
        print(f"tokenization (train): {data.report.summary()}")

    # 2. model, plan, optimiser, schedule
    model = load_reward_model(cfg.model, num_labels=E * (1 + len(heads)), dtype=cfg.dtype,
                              **({} if encoder else {"attn_implementation": "sdpa"}))
    model.config.pad_token_id = tok.pad_token_id
    if cfg.disable_dropout:
        disable_dropout(model)
    model = prepare_model(model, cfg, "SEQ_CLS")
    wrapper = ForwardModule(model, "pair_rewards", pad_tolerance=cfg.pad_tolerance)
    weights = bootstrap_weights(len(data.items), E, cfg.seed, cfg.ensemble.bootstrap)
    collate = make_collate(data, weights, layout, tok.pad_token_id, encoder, cfg.micro_tokens)
    wrapper, optimizer, scheduler, loader, num_steps, plan = stage.prepare(
        cfg, accelerator, wrapper, [pair_length(it, layout) for it in data.items],
        lambda mb: collate([data.items[i] for i in mb.rows]))
    # each step's loss is normalised by the counts of its GLOBAL batch (every process's micro-batches,
    # known up front); DDP averages gradients over processes, so each loss is scaled back up below
    per_step = [[0, 0] for _ in range(num_steps)]
    for mb, (n_overall, n_attr) in zip(plan, counted_per_batch(data, [mb.rows for mb in plan], cfg.ties)):
        per_step[mb.step][0] += n_overall
        per_step[mb.step][1] += n_attr
    step, loader, _ = stage.resume(cfg, accelerator, run, loader, scheduler)

    # 3. the loop
    window = cfg.grad_accum * accelerator.num_processes
    bar = progress(num_steps, "train rm", disable=not accelerator.is_main_process, initial=step)
    it = iter(loader)
    while step < num_steps:
        wrapper.train()
        tally = Tally(heads, accelerator.num_processes)
        for i in range(cfg.grad_accum):
            pieces = next(it)  # one micro-batch, in pieces under micro_tokens
            for j, rb in enumerate(pieces):
                sync = i == cfg.grad_accum - 1 and j == len(pieces) - 1
                with accelerator.no_sync(wrapper) if not sync else contextlib.nullcontext():
                    rb = to_device(rb, accelerator.device)
                    r = wrapper(rb.batch)
                    out = rm_loss(r.chosen.float(), r.rejected.float(), rb, cfg, len(heads), *per_step[step])
                    # accelerate divides by grad_accum and DDP averages over processes; the losses of the
                    # window's micro-batches on every process already sum to the window mean
                    accelerator.backward(out["loss"] * cfg.grad_accum * accelerator.num_processes)
                tally.add(out, float(out["loss"].detach()))
        metrics = tally.metrics("train", accelerator)
        lr = scheduler.get_last_lr()[0]
        norm = optimizer_step(accelerator, wrapper, optimizer, scheduler, cfg.max_grad_norm, step + 1,
                              metrics["train/loss"], run)
        step += 1
        metrics.update({"train/grad_norm": float(norm), "train/lr": lr,
                        "train/epoch": step * window * cfg.batch_size / len(data.items)})
        if eval_data is not None and stage.should_eval(cfg, step, num_steps):
            metrics.update(evaluate_pairs(wrapper, eval_data, cfg, heads, layout, tok.pad_token_id, encoder, E))
        if stage.should_log(cfg, step, num_steps):
            run.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", acc=f"{metrics['train/accuracy']:.3f}")
        stage.maybe_checkpoint(cfg, accelerator, run, step, num_steps, scheduler)
    bar.close()

    # 4. final evaluation, checkpoint, model
    if eval_data is not None:
        final_eval = evaluate_pairs(wrapper, eval_data, cfg, heads, layout, tok.pad_token_id, encoder, E)
        run.log(step, final_eval)
        if accelerator.is_main_process:
            print("eval: " + ", ".join(f"{k}={v:.4f}" for k, v in final_eval.items() if "accuracy" in k))
    inner = accelerator.unwrap_model(wrapper).model
    final = stage.finish(cfg, accelerator, run, step, scheduler, inner, tok, merge_lora=True)
    if accelerator.is_main_process:
        (final / "preftune_rm.json").write_text(json.dumps(info, indent=2))
    accelerator.wait_for_everyone()
    return final


def evaluate_pairs(wrapper, data: PairData, cfg: RMConfig, heads: list[str], layout: str, pad_id: int,
                   encoder: bool, E: int) -> dict:
    """eval/loss, eval/accuracy, eval/heads/<name>/accuracy ... over a tokenised pair set (no grad)."""
    batches = eval_batches([pair_length(it, layout) for it in data.items], cfg.eval_batch_size)
    counted = counted_per_batch(data, batches, cfg.ties)
    total = (sum(c[0] for c in counted), sum(c[1] for c in counted))
    collate = make_collate(data, torch.ones(len(data.items), E), layout, pad_id, encoder)
    was_training = wrapper.training
    wrapper.eval()
    tally = Tally(heads)
    device = next(wrapper.parameters()).device
    with torch.no_grad():
        for b in batches:
            for rb in collate([data.items[i] for i in b]):
                rb = to_device(rb, device)
                r = wrapper(rb.batch)
                out = rm_loss(r.chosen.float(), r.rejected.float(), rb, cfg, len(heads), *total)
                tally.add(out, float(out["loss"].detach()))
    wrapper.train(was_training)
    return tally.metrics("eval")


# rm_data / rm_loss names stay importable from here (tests and callers use preftune.train.rm)
__all__ = ["MISSING", "VERDICT_CODES", "EnsembleConfig", "PairData", "RMBatch", "RMConfig", "counted_per_batch",
           "load_pairs", "make_collate", "prepare_pairs", "resolve_heads", "rm_loss", "train_rm"]
