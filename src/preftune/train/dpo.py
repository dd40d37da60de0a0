"""`preftune train dpo`: the direct-preference family (DPO, IPO, SimPO, ORPO, KTO, ... and mixes).

    preftune train dpo --model smollm2-135m --data pairs.jsonl --out runs/dpo loss=sigmoid beta=0.1
    accelerate launch -m preftune train dpo ...     # the same run on several processes

`train_dpo(cfg)` reads top to bottom: check the config, read and tokenise the data (every bad input
fails here, before a model is loaded), load the policy and the reference, then the loop. The losses
are pure functions in preftune.losses; this file only feeds them log-probs and logs what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.config import opt
from preftune.train.common import TrainConfig
from preftune.train.loop import (
    add_train_parser,
    config_from_args,
    finish_metrics,
    kto_metrics,
    pair_metrics,
    warn,
)
from preftune.train.refcache import Reference, load_reference, reference_logps

REFERENCES = ("auto", "model", "adapter", "cache", "none")
PAIR_LAYOUTS = ("shared", "padded", "packed")


@dataclass
class DPOConfig(TrainConfig):
    loss: str = opt("sigmoid", "loss name or weighted mix, e.g. sigmoid | ipo | simpo | kto | sigmoid:1,sft:0.1 (RPO)")
    beta: float = opt(0.1, "β: strength of the implicit KL to the reference (λ for ORPO, τ for IPO)")
    label_smoothing: float = opt(0.0, "cDPO smoothing (sigmoid, simpo), flip rate ε (robust, exo_pair)")
    reference: str = opt("auto", "model (a frozen copy) | adapter (LoRA off = the reference) | cache (reference "
                                 "log-probs computed once, kept on disk) | none (SimPO/ORPO) | auto")
    ref_model: str | None = opt(None, "reference model for reference=model|cache (default: the policy's start)")
    ref_cache_dir: str | None = opt(None, "where reference=cache keeps its files (default: $PREFTUNE_CACHE/refcache)")
    layout: str = opt("shared", "pair layout: shared (prompt computed once per pair) | padded | packed (padding-free)")
    pack_tokens: int = opt(0, "layout=packed: tokens per packed row (0 = 2 x max_length)")
    chunk_size: int = opt(1024, "completion tokens per LM-head chunk (bounds the logits memory)")
    disable_dropout: bool = opt(True, "set the policy's dropout to 0 (as TRL's DPOTrainer does): policy and "
                                      "reference log-probs are then deterministic, and the margin is not noise")
    use_confidence: bool = opt(False, "use each row's `confidence` as a soft target (sigmoid-type losses)")
    use_margin: bool = opt(False, "shift the logit by each row's `margin` x margin_scale (ODPO-style)")
    margin_scale: float = opt(1.0, "multiplier turning a row's margin into reward units")
    ipo_normalize_length: bool = opt(True, "IPO: divide log-ratios by the completion length")
    simpo_gamma: float = opt(0.5, "SimPO target reward margin γ")
    discopop_tau: float = opt(0.05, "DiscoPOP temperature τ")
    bco_delta: float = opt(0.0, "BCO-pair reward shift δ")
    desirable_weight: float = opt(1.0, "KTO λ_D")
    undesirable_weight: float = opt(1.0, "KTO λ_U")
    merge_lora: bool = opt(False, "with LoRA: also write RUN/final/merged, the base with the adapter folded in")

    def loss_mix(self):
        from preftune.losses.preference import LossMix

        return LossMix.parse(self.loss)

    def resolved_reference(self) -> str:
        if self.reference != "auto":
            return self.reference
        if not self.loss_mix().needs_reference:
            return "none"
        return "adapter" if self.lora.enabled else "model"

    def validate(self) -> None:
        super().validate()
        from preftune.losses.preference import LossType

        mix = self.loss_mix()  # ValueError listing the valid names for an unknown one
        if self.reference not in REFERENCES:
            raise ValueError(f"reference: must be one of {', '.join(REFERENCES)}, got {self.reference!r}")
        if self.layout not in PAIR_LAYOUTS:
            raise ValueError(f"layout: must be one of {', '.join(PAIR_LAYOUTS)}, got {self.layout!r}")
        ref = self.resolved_reference()
        if mix.needs_reference and ref == "none":
            need = [t.value for t, _ in mix.terms if t.needs_reference]
            free = ", ".join(t.value for t in LossType if not t.needs_reference)
            raise ValueError(f"loss {', '.join(need)} needs a reference model but reference=none; use "
                             f"reference=model|adapter|cache, or a reference-free loss ({free})")
        if ref == "adapter" and not self.lora.enabled:
            raise ValueError("reference=adapter needs lora.enabled=true (the reference is the base with the adapter off)")
        if not mix.paired and any(t is not LossType.KTO for t, _ in mix.terms):
            raise ValueError(f"loss {self.loss!r}: kto works on unpaired rows and mixes only with sft "
                             "(e.g. kto:1,sft:0.1), not with pairwise losses")
        if not mix.paired and ref == "cache":
            raise ValueError("loss kto estimates its reference point from mismatched completions each batch, "
                             "which a cache cannot hold: use reference=model or adapter")
        if self.use_margin and not any(t.accepts_margin for t, _ in mix.terms):
            ok = ", ".join(t.value for t in LossType if t.accepts_margin)
            raise ValueError(f"use_margin: loss {self.loss!r} takes no margin; losses with a margin: {ok}")
        if self.use_confidence and not any(t.accepts_confidence for t, _ in mix.terms):
            ok = ", ".join(t.value for t in LossType if t.accepts_confidence)
            raise ValueError(f"use_confidence: loss {self.loss!r} takes no confidence; losses that do: {ok}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


# --------------------------------------------------------------------------- data

@dataclass
class PairData:
    items: list          # PairTokens (pairs) or SequenceTokens (KTO rows)
    confidence: list     # per item, 1.0 when the row has none
    margin: list         # per item, 0.0 when the row has none
    labels: list | None  # KTO rows: True = desirable
    report: Any          # tokenize.TokenizeReport
    num_rated_expanded: int = 0


def _rows(path: str, paired: bool, loss: str) -> tuple[list, list | None, int]:
    """Pair records (rated rows expanded into pairs), or for KTO (prompt, completion, label) rows."""
    from preftune.data.io import read_records
    from preftune.data.records import PairRecord, RatedRecord, UnpairedRecord

    recs = read_records(path)
    unpaired = [i for i, r in enumerate(recs) if isinstance(r, UnpairedRecord)]
    if paired and unpaired:
        raise ValueError(f"{path}: {len(unpaired)} unpaired row(s) (prompt/completion/label; first: row "
                         f"{unpaired[0] + 1}), but loss {loss!r} needs pairs (prompt/chosen/rejected). "
                         "Use loss=kto for unpaired rows.")
    pairs, rated = [], 0
    for r in recs:
        if isinstance(r, RatedRecord):
            rated += 1
            pairs += r.to_pairs()
        elif isinstance(r, PairRecord):
            pairs.append(r)
    if paired:
        return pairs, None, rated
    rows = [(p.prompt, p.chosen, True, p) for p in pairs] + [(p.prompt, p.rejected, False, p) for p in pairs]
    rows += [(r.prompt, r.completion, r.label, r) for r in recs if isinstance(r, UnpairedRecord)]
    return rows, [lab for _, _, lab, _ in rows], rated


def load_pair_data(path: str, tokenizer, cfg: DPOConfig) -> PairData:
    """Read and tokenise; ValueError for unpaired rows under a paired loss and for overlong rows
    under on_overlong=error. Pairs are split into unpaired rows for KTO."""
    from preftune.tokenize import tokenize_completions, tokenize_pairs

    mix = cfg.loss_mix()
    rows, labels, rated = _rows(path, mix.paired, cfg.loss)
    kw = {"max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length, "on_overlong": cfg.on_overlong}
    try:
        if mix.paired:
            items, report = tokenize_pairs(rows, tokenizer, **kw)
            recs = [rows[it.index] for it in items]
        else:
            items, report = tokenize_completions([r[0] for r in rows], [r[1] for r in rows], tokenizer, **kw)
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
    from preftune.batching import (
        collate_pairs_packed,
        collate_pairs_padded,
        collate_pairs_shared,
        collate_sequences_padded,
    )

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


# --------------------------------------------------------------------------- losses and metrics

def pair_losses(cfg: DPOConfig, mix, pol, ref_out, data: PairData, rows: list[int]):
    """PreferenceLossOutput of the configured loss (mix) on one batch; losses (B,) per pair."""
    import torch

    from preftune.losses.preference import mixed_preference_loss

    dev = pol.chosen_logps.device
    c_len, r_len = pol.num_chosen_tokens.float(), pol.num_rejected_tokens.float()
    kw: dict[str, Any] = {
        "beta": cfg.beta, "chosen_lengths": c_len, "rejected_lengths": r_len, "label_smoothing": cfg.label_smoothing,
        "ipo_normalize_length": cfg.ipo_normalize_length, "simpo_gamma": cfg.simpo_gamma, "discopop_tau": cfg.discopop_tau,
        "bco_delta": cfg.bco_delta, "desirable_weight": cfg.desirable_weight, "undesirable_weight": cfg.undesirable_weight}
    if cfg.use_margin:
        kw["margin"] = torch.tensor([data.margin[i] for i in rows], dtype=torch.float32, device=dev)
    if cfg.use_confidence:
        kw["confidence"] = torch.tensor([data.confidence[i] for i in rows], dtype=torch.float32, device=dev)
    # RPO / ORPO's SFT term: the per-token mean NLL of the chosen response (Pang et al. 2024; Hong et al. 2024)
    chosen_nll = -pol.chosen_logps / c_len.clamp(min=1)
    rc, rr = (ref_out[0], ref_out[1]) if ref_out is not None else (None, None)
    return mixed_preference_loss(mix, pol.chosen_logps, pol.rejected_logps, rc, rr, chosen_nll=chosen_nll, **kw)


def kto_losses(cfg: DPOConfig, mix, pol, ref_out, z0, labels):
    """KTO on unpaired rows (Ethayarajh et al. 2024) plus the mix's SFT weight on desirable rows."""
    from preftune.losses.unpaired import kto_loss

    out = kto_loss(pol.logps, ref_out[0], labels, beta=cfg.beta, z0=z0, desirable_weight=cfg.desirable_weight,
                   undesirable_weight=cfg.undesirable_weight)
    losses = out.losses * sum(w for _, w in mix.terms)
    if mix.sft_weight:
        losses = losses + mix.sft_weight * labels.float() * (-pol.logps / pol.num_tokens.clamp(min=1))
    return losses, out.rewards


def mismatched_rows(items: list, max_length: int) -> list:
    """KTO's reference point rows: prompt i with the completion of row i-1 (cut to fit max_length)."""
    from preftune.tokenize import SequenceTokens

    out = []
    for i, it in enumerate(items):
        comp = items[i - 1].completion_ids
        room = max(1, max_length - len(it.prompt_ids))
        out.append(SequenceTokens(it.prompt_ids, comp[:room], len(comp) > room, it.index))
    return out


def kto_reference_point(module_model, ref: Reference, items: list, collate, cfg: DPOConfig, accelerator):
    """z0 = max(0, mean log-ratio on mismatched completions), averaged over processes before the clamp."""
    import torch

    from preftune.losses.unpaired import kto_reference_point as z0_of
    from preftune.models.forward import sequence_logps
    from preftune.train.loop import to_device

    batch = to_device(collate(mismatched_rows(items, cfg.max_length)), accelerator.device)
    with torch.no_grad():
        pol = sequence_logps(module_model, batch, chunk_size=cfg.chunk_size)
    ref_out = reference_logps(ref, module_model, batch, [], "train", cfg.chunk_size, accelerator.device)
    z0 = z0_of(pol.logps, ref_out[0], clamp=False)
    if accelerator.num_processes > 1:
        z0 = accelerator.reduce(z0.reshape(1), reduction="mean")[0]
    return z0.clamp(min=0)


# --------------------------------------------------------------------------- one batch, evaluation

def batch_loss(cfg: DPOConfig, mix, module, policy_model, ref: Reference, batch, rows: list[int], data: PairData,
               split: str, collate, accelerator, sums):
    """Per-row losses (B,) of one batch (with gradients when enabled); adds its metrics to `sums`."""
    import torch

    pol = module(batch)
    ref_out = reference_logps(ref, policy_model, batch, rows, split, cfg.chunk_size, accelerator.device)
    if mix.paired:
        out = pair_losses(cfg, mix, pol, ref_out, data, rows)
        pair_metrics(sums, out, pol, ref_out)
        return out.losses
    labels = torch.tensor([data.labels[i] for i in rows], dtype=torch.bool, device=pol.logps.device)
    z0 = kto_reference_point(policy_model, ref, [data.items[i] for i in rows], collate, cfg, accelerator)
    losses, rewards = kto_losses(cfg, mix, pol, ref_out, z0, labels)
    kto_metrics(sums, losses, rewards, pol, ref_out, labels, z0)
    return losses


def evaluate(cfg: DPOConfig, mix, module, policy_model, ref: Reference, data: PairData, collate, accelerator) -> dict:
    """eval/* metrics over the whole held-out set (sharded over processes, no gradients)."""
    import torch

    from preftune.train.loop import MetricSums, eval_batches, to_device

    sums = MetricSums()
    inner = accelerator.unwrap_model(module)
    inner.eval()
    with torch.no_grad():
        for rows in eval_batches([item_length(it) for it in data.items], cfg.batch_size,
                                 accelerator.process_index, accelerator.num_processes):
            batch = to_device(collate([data.items[i] for i in rows]), accelerator.device)
            batch_loss(cfg, mix, inner, policy_model, ref, batch, rows, data, "eval", collate, accelerator, sums)
    inner.train()
    return finish_metrics(sums.reduce(accelerator, "eval"), "eval")


# --------------------------------------------------------------------------- the loop

def train_dpo(cfg: DPOConfig) -> Path:
    """Train a policy with the configured direct-preference loss; returns RUN/final."""
    import time

    from preftune.models import load_policy, load_tokenizer
    from preftune.train.common import (
        build_optimizer,
        disable_dropout,
        load_checkpoint,
        make_accelerator,
        progress,
        save_checkpoint,
        truncate_metrics,
    )
    from preftune.train.loop import (
        MetricSums,
        chosen_falls_while_margin_grows,
        logps_module,
        make_loader,
        num_steps_for,
        open_run,
        optimizer_step,
        plan_micro_batches,
        prepare_policy,
        read_metrics,
        save_final_model,
        to_device,
    )

    # 1. config and data: every bad input fails here, before a model is loaded
    t_start = time.perf_counter()
    cfg.validate()
    mix = cfg.loss_mix()
    tokenizer = load_tokenizer(cfg.model)
    train = load_pair_data(cfg.data, tokenizer, cfg)
    evals = load_pair_data(cfg.eval_data, tokenizer, cfg) if cfg.eval_data else None
    collate = make_collate(cfg, tokenizer.pad_token_id, mix.paired)

    # 2. run folder and accelerator
    accelerator = make_accelerator(cfg)
    run = open_run(cfg, "dpo", accelerator)
    tok_report = {"train": _report(train)} | ({"eval": _report(evals)} if evals else {})
    run.update_info(tokenization=tok_report, reference=cfg.resolved_reference(), loss=cfg.loss)
    if train.report.num_truncated or train.report.num_dropped:
        warn(f"training data: {train.report.summary()}")

    # 3. policy and reference (the reference is taken from the starting weights, before LoRA)
    policy = load_policy(cfg.model, dtype=cfg.dtype)
    if cfg.disable_dropout:  # before the reference is taken from it: both then score deterministically
        disable_dropout(policy)
    splits = {"train": train} | ({"eval": evals} if evals else {})
    t_ref = time.perf_counter()
    ref, cache_report = load_reference(cfg, policy, splits, collate, accelerator)
    t_ref = time.perf_counter() - t_ref
    if cache_report:
        run.update_info(reference_cache=cache_report)
    policy = prepare_policy(policy, cfg)
    module = logps_module(policy, cfg.chunk_size)

    # 4. the micro-batch plan, optimiser, accelerate
    num_steps = num_steps_for(cfg, len(train.items), accelerator.num_processes)
    plan = plan_micro_batches([item_length(it) for it in train.items], cfg.batch_size, cfg.grad_accum,
                              accelerator.num_processes, num_steps, cfg.seed)
    loader = make_loader(plan, lambda mb: (collate([train.items[i] for i in mb.rows]), mb))
    optimizer, scheduler = build_optimizer(module, cfg, num_steps)
    # the scheduler is stepped by hand once per optimiser step (accelerate's wrapper would step it
    # num_processes times), and checkpointed with the rest
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)
    step, warned = 0, False
    if cfg.resume:
        step = int(load_checkpoint(accelerator, cfg.out)["step"])
        truncate_metrics(run, step)
        loader = accelerator.skip_first_batches(loader, step * cfg.grad_accum)
    history = read_metrics(run)

    # 5. train
    t_train, cpu_train, first_step = time.perf_counter(), time.process_time(), step
    bar = progress(num_steps, "dpo", disable=not accelerator.is_main_process, initial=step)
    sums = MetricSums()
    module.train()
    for batch, mb in loader:
        batch = to_device(batch, accelerator.device)
        with accelerator.accumulate(module):
            losses = batch_loss(cfg, mix, module, policy, ref, batch, mb.rows, train, "train", collate,
                                accelerator, sums)
            accelerator.backward(losses.sum() * mb.scale)
            if not accelerator.sync_gradients:
                continue
            grad_norm = optimizer_step(accelerator, module, optimizer, scheduler, cfg.max_grad_norm)
        step += 1
        metrics = finish_metrics(sums.reduce(accelerator, "train"), "train")
        metrics |= {"train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0]}
        if step % cfg.log_every == 0 or step == num_steps:
            run.log(step, metrics)
            history.append(metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", margin=f"{metrics.get('train/rewards/margin', 0):.3f}")
        if not warned and chosen_falls_while_margin_grows(history):
            warned = True
            msg = ("the chosen log-prob is falling while the margin grows: both responses are being pushed "
                   "down (rejected faster); consider a smaller lr, a larger beta, or an sft term (loss=sigmoid:1,sft:0.1)")
            if accelerator.is_main_process:
                warn(f"step {step}: {msg}")
            run.update_info(warnings=run.info.get("warnings", []) + [{"step": step, "kind": "chosen_logps_falling",
                                                                      "message": msg}])
        if evals and cfg.eval_every and step % cfg.eval_every == 0 and step < num_steps:
            run.log(step, evaluate(cfg, mix, module, policy, ref, evals, collate, accelerator))
        if cfg.save_every > 0 and step % cfg.save_every == 0 and step < num_steps:
            save_checkpoint(accelerator, run, step, cfg.keep_checkpoints)
    bar.close()
    t_train, cpu_train = time.perf_counter() - t_train, time.process_time() - cpu_train

    # 6. final evaluation, checkpoint, model
    if evals:
        run.log(step, evaluate(cfg, mix, module, policy, ref, evals, collate, accelerator))
    if cfg.save_every >= 0:
        save_checkpoint(accelerator, run, step, cfg.keep_checkpoints)
    final = save_final_model(accelerator, policy, tokenizer, run, cfg.merge_lora)
    # wall-clock timing lives in run.json, not metrics.jsonl (a resumed run's metrics must match exactly)
    run.update_info(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), num_steps=step, timing={
        "total_seconds": round(time.perf_counter() - t_start, 3), "reference_seconds": round(t_ref, 3),
        "train_seconds": round(t_train, 3), "seconds_per_step": round(t_train / max(1, step - first_step), 3),
        "train_cpu_seconds": round(cpu_train, 3)})  # CPU time of all threads: less noisy on a shared machine
    run.close()
    return final


def _report(data: PairData) -> dict:
    r = data.report
    out = {"num_rows": r.num_rows, "num_truncated": r.num_truncated, "num_dropped": r.num_dropped,
           "dropped": [{"row": i, "reason": why} for i, why in r.dropped]}
    if data.num_rated_expanded:
        out["num_rated_rows_expanded"] = data.num_rated_expanded
    return out


# --------------------------------------------------------------------------- CLI

def register(sub) -> None:
    add_train_parser(sub, "dpo", "train a policy with DPO or a relative (ipo, simpo, orpo, kto, ... or a mix)",
                     DPOConfig, run_dpo)


def run_dpo(args) -> int:
    cfg = config_from_args(DPOConfig, args)
    final = train_dpo(cfg)
    print(f"final model: {final}")
    return 0
