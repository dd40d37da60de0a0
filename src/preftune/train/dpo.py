"""`preftune train dpo`: the direct-preference family (DPO, IPO, SimPO, ORPO, KTO, ... and mixes).

    preftune train dpo --model smollm2-135m --data pairs.jsonl --out runs/dpo loss=sigmoid beta=0.1
    accelerate launch -m preftune train dpo ...     # the same run on several processes

`train_dpo(cfg)` reads top to bottom: check the config, read and tokenise the data (every bad input
fails here, before a model is loaded), load the policy and the reference, then the loop. The losses
are pure functions in preftune.losses; this file only feeds them log-probs and logs what they return.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from preftune.batching import (
    collate_pairs_packed,
    collate_pairs_padded,
    collate_pairs_shared,
    collate_sequences_padded,
    to_device,
)
from preftune.data.pairs import read_preference_rows
from preftune.losses.preference import PairLossInputs, PreferenceLossOutput, mixed_preference_loss
from preftune.losses.unpaired import kto_loss
from preftune.losses.unpaired import kto_reference_point as z0_of
from preftune.models import load_policy, load_tokenizer
from preftune.models.forward import ForwardModule, PairLogps, SequenceLogps, sequence_logps
from preftune.tokenize import SequenceTokens, TokenizeReport, tokenize_completions, tokenize_pairs
from preftune.train import stage
from preftune.train.configs import DPOConfig
from preftune.train.dpo_metrics import (
    CHOSEN_FALLING,
    chosen_falls_while_margin_grows,
    finish_metrics,
    kto_metrics,
    pair_metrics,
)
from preftune.train.optim import disable_dropout, optimizer_step, prepare_model
from preftune.train.plan import MetricSums, eval_batches
from preftune.train.refcache import Reference, RefPairLogps, load_reference, reference_logps
from preftune.train.run import progress, read_metrics, warn

__all__ = ["DPOConfig", "PairData", "batch_loss", "load_pair_data", "make_collate", "train_dpo"]


# --------------------------------------------------------------------------- data

@dataclass
class PairData:
    items: list               # PairTokens (pairs) or SequenceTokens (KTO rows)
    confidence: list[float]   # per item, 1.0 when the row has none
    margin: list[float]       # per item, 0.0 when the row has none (already times margin_scale)
    labels: list[bool] | None  # KTO rows: True = desirable
    report: TokenizeReport
    num_rated_expanded: int = 0

    def report_dict(self) -> dict:
        return self.report.to_dict(**({"num_rated_rows_expanded": self.num_rated_expanded}
                                      if self.num_rated_expanded else {}))


def _rows(path: str, paired: bool, loss: str) -> tuple[list, list | None, int]:
    """Pair records (rated rows expanded into pairs), or for KTO (prompt, completion, label) rows."""
    rows = read_preference_rows(path)
    if paired and rows.unpaired:
        first = rows.first_unpaired_row
        raise ValueError(f"{path}:{first}: row: {len(rows.unpaired)} unpaired row(s) (prompt/completion/label; first: "
                         f"row {first}), but loss {loss!r} needs pairs (prompt/chosen/rejected). "
                         "Use loss=kto for unpaired rows.")
    if paired:
        return rows.pairs, None, rows.num_rated
    kto = [(p.prompt, p.chosen, True, p) for p in rows.pairs] + [(p.prompt, p.rejected, False, p) for p in rows.pairs]
    kto += [(r.prompt, r.completion, r.label, r) for r in rows.unpaired]
    return kto, [lab for _, _, lab, _ in kto], rows.num_rated


def load_pair_data(path: str, tokenizer, cfg: DPOConfig) -> PairData:
    """Read and tokenise; ValueError for unpaired rows under a paired loss and for overlong rows
    under on_overlong=error. Pairs are split into unpaired rows for KTO."""
    mix = cfg.loss_mix()
    rows, labels, rated = _rows(path, mix.paired, cfg.loss)
    kw = {"max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length, "on_overlong": cfg.on_overlong,
          "train_on": cfg.train_on}
    try:
        if mix.paired:
            items, report = tokenize_pairs(rows, tokenizer, **kw)
            recs = [rows[it.index] for it in items]
        else:
            items, report = tokenize_completions([r[0] for r in rows], [r[1] for r in rows], tokenizer,
                                                 tools=[r[3].tools for r in rows], **kw)
            recs = [rows[it.index][3] for it in items]
            labels = [labels[it.index] for it in items]
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not items:
        raise ValueError(f"{path}: no rows left after tokenisation ({report.summary()})")
    conf = [1.0 if r.confidence is None else r.confidence for r in recs]
    margin = [0.0 if r.margin is None else r.margin * cfg.margin_scale for r in recs]
    return PairData(items, conf, margin, labels, report, rated)


def make_collate(cfg: DPOConfig, pad_id: int, paired: bool):
    """items -> batch for the configured layout (KTO rows: padded single sequences)."""
    if not paired:
        return lambda items: collate_sequences_padded(items, pad_id)
    if cfg.layout == "padded":
        return lambda items: collate_pairs_padded(items, pad_id)
    if cfg.layout == "packed":
        budget = cfg.pack_tokens or 2 * cfg.max_length
        return lambda items: collate_pairs_packed(items, pad_id, budget)
    return lambda items: collate_pairs_shared(items, pad_id)


def item_length(it) -> int:
    """Tokens of a pair (prompt + chosen + rejected) or row, for length grouping. The same for every
    layout on purpose: a run's batches must not change with the layout (so layouts can be compared)."""
    if hasattr(it, "chosen_ids"):
        return len(it.prompt_ids) + len(it.chosen_ids) + len(it.rejected_ids)
    return len(it.prompt_ids) + len(it.completion_ids)


# --------------------------------------------------------------------------- losses

@dataclass
class DPOStep:
    """What computing one batch's loss needs besides the batch: the settings and the models."""
    cfg: DPOConfig
    module: Any                # the policy's log-prob module (accelerate-prepared for training)
    policy: Any                # the policy model itself (the reference, for reference=adapter)
    ref: Reference
    collate: Any               # items -> batch (KTO's mismatched rows)
    accelerator: Any

    def __post_init__(self) -> None:
        self.mix = self.cfg.loss_mix()
        self.params = self.cfg.loss_params()


def pair_losses(step: DPOStep, pol: PairLogps, ref: RefPairLogps | None, data: PairData,
                rows: list[int]) -> PreferenceLossOutput:
    """PreferenceLossOutput of the configured loss (mix) on one batch; losses (B,) per pair."""
    cfg, dev = step.cfg, pol.chosen_logps.device
    c_len, r_len = pol.num_chosen_tokens.float(), pol.num_rejected_tokens.float()

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor([values[i] for i in rows], dtype=torch.float32, device=dev)

    inputs = PairLossInputs(
        pol.chosen_logps, pol.rejected_logps,
        ref.chosen_logps if ref is not None else None, ref.rejected_logps if ref is not None else None,
        chosen_lengths=c_len, rejected_lengths=r_len,
        margin=column(data.margin) if cfg.use_margin else None,
        confidence=column(data.confidence) if cfg.use_confidence else None,
        # RPO / ORPO's SFT term: the per-token mean NLL of chosen (Pang et al. 2024; Hong et al. 2024)
        chosen_nll=-pol.chosen_logps / c_len.clamp(min=1))
    return mixed_preference_loss(step.mix, inputs, step.params)


def kto_losses(step: DPOStep, pol: SequenceLogps, ref_logps: torch.Tensor, z0, labels: torch.Tensor):
    """KTO on unpaired rows (Ethayarajh et al. 2024) plus the mix's SFT weight on desirable rows."""
    p = step.params
    out = kto_loss(pol.logps, ref_logps, labels, beta=p.beta, z0=z0, desirable_weight=p.desirable_weight,
                   undesirable_weight=p.undesirable_weight)
    losses = out.losses * sum(w for _, w in step.mix.terms)
    if step.mix.sft_weight:
        losses = losses + step.mix.sft_weight * labels.float() * (-pol.logps / pol.num_tokens.clamp(min=1))
    return losses, out.rewards


def mismatched_rows(items: list, max_length: int) -> list:
    """KTO's reference point rows: prompt i with the completion of row i-1 (cut to fit max_length)."""
    out = []
    for i, it in enumerate(items):
        comp, mask = items[i - 1].completion_ids, items[i - 1].completion_mask
        room = max(1, max_length - len(it.prompt_ids))
        out.append(SequenceTokens(it.prompt_ids, comp[:room], len(comp) > room, it.index, it.prompt_mask,
                                  None if mask is None else mask[:room]))
    return out


def kto_reference_point(step: DPOStep, items: list):
    """z0 = max(0, mean log-ratio on mismatched completions), averaged over processes before the clamp."""
    cfg, acc = step.cfg, step.accelerator
    batch = to_device(step.collate(mismatched_rows(items, cfg.max_length)), acc.device)
    with torch.no_grad():
        pol = sequence_logps(step.policy, batch, chunk_size=cfg.chunk_size)
    ref = reference_logps(step.ref, step.policy, batch, [], "train", cfg.chunk_size, acc.device)
    z0 = z0_of(pol.logps, ref.logps, clamp=False)
    if acc.num_processes > 1:
        z0 = acc.reduce(z0.reshape(1), reduction="mean")[0]
    return z0.clamp(min=0)


def batch_loss(step: DPOStep, module, batch, rows: list[int], data: PairData, split: str,
               sums: MetricSums) -> torch.Tensor:
    """Per-row losses (B,) of one batch (with gradients when enabled); adds its metrics to `sums`."""
    pol = module(batch)
    ref = reference_logps(step.ref, step.policy, batch, rows, split, step.cfg.chunk_size, step.accelerator.device)
    if step.mix.paired:
        out = pair_losses(step, pol, ref, data, rows)
        pair_metrics(sums, out, pol, ref)
        return out.losses
    labels = torch.tensor([data.labels[i] for i in rows], dtype=torch.bool, device=pol.logps.device)
    z0 = kto_reference_point(step, [data.items[i] for i in rows])
    losses, rewards = kto_losses(step, pol, ref.logps, z0, labels)
    kto_metrics(sums, losses, rewards, pol, ref, labels, z0)
    return losses


def evaluate(step: DPOStep, data: PairData) -> dict:
    """eval/* metrics over the whole held-out set (sharded over processes, no gradients)."""
    acc, sums = step.accelerator, MetricSums()
    inner = acc.unwrap_model(step.module)
    inner.eval()
    with torch.no_grad():
        for rows in eval_batches([item_length(it) for it in data.items], step.cfg.batch_size,
                                 acc.process_index, acc.num_processes):
            batch = to_device(step.collate([data.items[i] for i in rows]), acc.device)
            batch_loss(step, inner, batch, rows, data, "eval", sums)
    inner.train()
    return finish_metrics(sums.reduce(acc, "eval"), "eval")


# --------------------------------------------------------------------------- the loop

def train_dpo(cfg: DPOConfig) -> Path:
    """Train a policy with the configured direct-preference loss; returns RUN/final."""
    # 1. config and data: every bad input fails here, before a model is loaded
    t_start = time.perf_counter()
    cfg.validate()
    cfg = stage.fit_max_length(cfg)
    mix = cfg.loss_mix()
    tokenizer = load_tokenizer(cfg.model)
    train = load_pair_data(cfg.data, tokenizer, cfg)
    evals = load_pair_data(cfg.eval_data, tokenizer, cfg) if cfg.eval_data else None
    collate = make_collate(cfg, tokenizer.pad_token_id, mix.paired)

    # 2. run folder and accelerator
    accelerator, run = stage.start(cfg, "dpo")
    tok_report = {"train": train.report_dict()} | ({"eval": evals.report_dict()} if evals else {})
    run.update_info(tokenization=tok_report, reference=cfg.resolved_reference(), loss=cfg.loss)
    if train.report.num_truncated or train.report.num_dropped:
        warn(f"training data: {train.report.summary()}")

    # 3. policy and reference (the reference is taken from the starting weights, before LoRA)
    policy = load_policy(cfg.model, dtype=cfg.dtype)
    if cfg.disable_dropout:  # before the reference is taken from it: both then score deterministically
        disable_dropout(policy)
    t_ref = time.perf_counter()
    ref, cache_report = load_reference(cfg, policy, {"train": train} | ({"eval": evals} if evals else {}),
                                       collate, accelerator)
    t_ref = time.perf_counter() - t_ref
    if cache_report:
        run.update_info(reference_cache=cache_report)
    policy = prepare_model(policy, cfg)
    module = ForwardModule(policy, "logps", chunk_size=cfg.chunk_size, return_tokens=True)

    # 4. the micro-batch plan, optimiser, accelerate; resume
    module, optimizer, scheduler, loader, num_steps, _ = stage.prepare(
        cfg, accelerator, module, [item_length(it) for it in train.items],
        lambda mb: (collate([train.items[i] for i in mb.rows]), mb))
    step, loader, _ = stage.resume(cfg, accelerator, run, loader, scheduler)
    ctx = DPOStep(cfg, module, policy, ref, collate, accelerator)
    history, warned = read_metrics(run), False

    # 5. train
    t_train, cpu_train, first_step = time.perf_counter(), time.process_time(), step
    bar = progress(num_steps, "dpo", disable=not accelerator.is_main_process, initial=step)
    sums = MetricSums()
    module.train()
    for batch, mb in loader:
        batch = to_device(batch, accelerator.device)
        with accelerator.accumulate(module):
            losses = batch_loss(ctx, module, batch, mb.rows, train, "train", sums)
            accelerator.backward(losses.sum() * mb.scale)
            if not accelerator.sync_gradients:
                continue
            metrics = finish_metrics(sums.reduce(accelerator, "train"), "train")
            grad_norm = optimizer_step(accelerator, module, optimizer, scheduler, cfg.max_grad_norm, step + 1,
                                       metrics["train/loss"], run)
        step += 1
        metrics |= {"train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0]}
        if stage.should_log(cfg, step, num_steps):
            run.log(step, metrics)
            history.append(metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", margin=f"{metrics.get('train/rewards/margin', 0):.3f}")
        if not warned and chosen_falls_while_margin_grows(history):
            warned = True
            run.warn(step, "chosen_logps_falling", CHOSEN_FALLING)
        if evals and stage.should_eval(cfg, step, num_steps):
            run.log(step, evaluate(ctx, evals))
        stage.maybe_checkpoint(cfg, accelerator, run, step, num_steps, scheduler)
    bar.close()
    t_train, cpu_train = time.perf_counter() - t_train, time.process_time() - cpu_train

    # 6. final evaluation, checkpoint, model
    if evals:
        run.log(step, evaluate(ctx, evals))
    # wall-clock timing lives in run.json, not metrics.jsonl (a resumed run's metrics must match exactly)
    timing = {"total_seconds": round(time.perf_counter() - t_start, 3), "reference_seconds": round(t_ref, 3),
              "train_seconds": round(t_train, 3), "seconds_per_step": round(t_train / max(1, step - first_step), 3),
              "train_cpu_seconds": round(cpu_train, 3)}  # CPU time of all threads: less noisy on a shared machine
    return stage.finish(cfg, accelerator, run, step, scheduler, policy, tokenizer, also_merged=cfg.merge_lora,
                        timing=timing)
