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

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from preftune.config import opt
from preftune.data.pairs import load_pairs
from preftune.train.common import TrainConfig
from preftune.train.rm_data import (
    MISSING,
    VERDICT_CODES,
    PairData,
    RMBatch,
    bootstrap_weights,
    counted_per_batch,
    make_collate,
    micro_batches,
    prepare_pairs,
    resolve_heads,
)
from preftune.train.rm_loss import RewardForward, Tally, rm_loss

CONFIDENCE_MODES = ("off", "soft", "weight")
LAYOUT_CHOICES = ("auto", "padded", "shared", "packed")
ENSEMBLE_MODES = ("heads", "members")


@dataclass
class EnsembleConfig:
    size: int = opt(1, "ensemble size K (1 = a single reward model)")
    mode: str = opt("heads", "heads: K heads on one backbone, each on its own bootstrap resample of the "
                             "pairs | members: K models trained apart (seeds seed..seed+K-1, own data order)")
    bootstrap: bool = opt(True, "heads mode: weight each pair by a Poisson(1) bootstrap count per head")


@dataclass
class RMConfig(TrainConfig):
    lr: float = opt(2e-5, "peak learning rate")
    layout: str = opt("auto", "batch layout: auto (shared prompt for decoders, padded for encoders) | padded | shared "
                              "| packed (decoders: several prompt-shared pairs per row, no padding)")
    margin_scale: float = opt(0.0, "BT margin m = margin_scale * row `margin` (0 = no margin; Llama 2 style)")
    center_coef: float = opt(0.0, "reward centering: + coef * mean((r_chosen + r_rejected)^2)")
    confidence: str = opt("off", "use the row's `confidence`: off | soft (target probability) | weight (loss weight)")
    label_smoothing: float = opt(0.0, "target 1 - eps for chosen (conservative BT)")
    ties: str = opt("skip", "rows with close: true are ties: skip | half (target 1/2) | rao_kupper")
    rao_kupper_log_theta: float = opt(1.0, "tie width a = log(theta) of the Rao-Kupper model")
    rated_min_margin: float = opt(0.0, "rated rows: only pairs whose scores differ by more than this")
    heads: list[str] = opt(help="attribute heads trained from rows' `attributes` (e.g. [helpfulness, "
                                "harmlessness]); [auto] = every attribute in the data", factory=list)
    head_weights: dict[str, float] = opt(help="weights of the scalarised reward by head name (overall + attributes); "
                                              "empty = the overall head alone", factory=dict)
    attribute_loss_weight: float = opt(1.0, "weight of the attribute heads' loss next to the overall head's")
    ensemble: EnsembleConfig = opt(help="ensemble settings", factory=EnsembleConfig)
    eval_batch_size: int = opt(32, "pairs per evaluation batch")
    disable_dropout: bool = opt(True, "set every dropout probability of the backbone to 0 (as TRL's RewardTrainer "
                                      "does): the BT margin then is not noise, and pieces/accumulation are exact")
    pad_tolerance: float = opt(0.05, "encoders: the rows of a batch run in length-sorted chunks whose padding share "
                                     "stays under this (0 = no padding computed, 1 = one padded block)")
    micro_tokens: int = opt(2048, "most tokens one forward/backward holds: a batch whose pairs need more is run in "
                                  "pieces with gradients summed (same update, bounded memory; 0 = no limit)")

    def validate(self) -> None:
        super().validate()
        checks = [("layout", self.layout, LAYOUT_CHOICES), ("confidence", self.confidence, CONFIDENCE_MODES),
                  ("ties", self.ties, ("skip", "half", "rao_kupper")), ("ensemble.mode", self.ensemble.mode, ENSEMBLE_MODES)]
        for key, value, valid in checks:
            if value not in valid:
                raise ValueError(f"{key}: must be one of {', '.join(valid)}, got {value!r}")
        if self.ensemble.size < 1:
            raise ValueError(f"ensemble.size: must be >= 1, got {self.ensemble.size}")
        if self.heads and "overall" in self.heads:
            raise ValueError("heads: 'overall' is always trained (from chosen/rejected); list attributes only")
        if not 0 <= self.pad_tolerance <= 1:
            raise ValueError(f"pad_tolerance: must be in [0, 1], got {self.pad_tolerance}")
        if self.micro_tokens < 0:
            raise ValueError(f"micro_tokens: must be >= 0 (0 = no limit), got {self.micro_tokens}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing: must be in [0, 0.5), got {self.label_smoothing}")



# --------------------------------------------------------------------------- the loop

def _layout(cfg: RMConfig, encoder: bool) -> str:
    if cfg.layout in ("shared", "packed") and encoder:
        raise ValueError(f"layout={cfg.layout} needs a decoder: an encoder sees the whole row (use layout=padded)")
    return cfg.layout if cfg.layout != "auto" else ("padded" if encoder else "shared")


def _check_model(name: str):
    """Tokenizer + encoder flag, with one clear error before any training starts."""
    from preftune.models import is_encoder, load_tokenizer, resolve_model_path

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
    import torch

    from preftune.models import load_reward_model
    from preftune.train.common import (
        apply_lora,
        build_optimizer,
        disable_dropout,
        load_checkpoint,
        make_accelerator,
        progress,
        save_checkpoint,
        save_final,
        truncate_metrics,
    )
    from preftune.train.loop import open_run

    # 1. everything that can fail on user input, before the run folder or the model
    tok, encoder = _check_model(cfg.model)
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

    acc = make_accelerator(cfg)
    run = open_run(cfg, "rm", acc)  # the main process creates the folder while the others wait
    tok_report = {"train": _report_dict(data.report, counts)}
    if eval_data is not None:
        tok_report["eval"] = _report_dict(eval_data.report, {})
    run.update_info(tokenization=tok_report, rm=info)
    if acc.is_main_process and (data.report.num_truncated or data.report.num_dropped):
        print(f"tokenization (train): {data.report.summary()}")

    # 2. model, optimiser, schedule
    model = load_reward_model(cfg.model, num_labels=E * (1 + len(heads)), dtype=cfg.dtype,
                              **({} if encoder else {"attn_implementation": "sdpa"}))
    model.config.pad_token_id = tok.pad_token_id
    if cfg.disable_dropout:
        disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, "SEQ_CLS")
    wrapper = RewardForward.build(model, cfg.pad_tolerance)
    per_process = math.ceil(len(data.items) / cfg.batch_size / acc.num_processes)
    num_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * per_process) // cfg.grad_accum)
    optimizer, scheduler = build_optimizer(wrapper, cfg, num_steps)
    wrapper, optimizer = acc.prepare(wrapper, optimizer)
    acc.register_for_checkpointing(scheduler)  # stepped by us once per optimiser step (not per process)

    weights = bootstrap_weights(len(data.items), E, cfg.seed, cfg.ensemble.bootstrap)
    collate = make_collate(data, weights, layout, tok.pad_token_id, encoder, cfg.micro_tokens)
    window = cfg.grad_accum * acc.num_processes
    schedule = micro_batches(data, cfg, layout, num_steps * window)
    counted = counted_per_batch(data, schedule, cfg.ties)

    start = 0
    if cfg.resume:  # no checkpoint yet (stopped before the first save): start over, keep nothing logged
        if run.checkpoints_dir.exists() and any(run.checkpoints_dir.glob("step_*")):
            start = load_checkpoint(acc, run.dir)["step"]
        truncate_metrics(run, start)
    # the DataLoader draws no global RNG (own generator), so a resumed run's dropout matches an unbroken one
    loader = torch.utils.data.DataLoader(data.items, batch_sampler=schedule[start * window:], collate_fn=collate,
                                         generator=torch.Generator())
    loader = acc.prepare(loader)
    params = [p for p in wrapper.parameters() if p.requires_grad]

    # 3. the loop
    bar = progress(num_steps, "train rm", disable=not acc.is_main_process, initial=start)
    it = iter(loader)
    step = start
    while step < num_steps:
        wrapper.train()
        # normalised by the counts of the GLOBAL window (every process's micro-batches, known up front);
        # DDP averages gradients over processes, so each loss is scaled back up by num_processes below
        n_overall = sum(counted[k][0] for k in range(step * window, (step + 1) * window))
        n_attr = sum(counted[k][1] for k in range(step * window, (step + 1) * window))
        tally = Tally(heads, acc.num_processes)
        for i in range(cfg.grad_accum):
            pieces = next(it)  # one micro-batch, in pieces under micro_tokens
            for j, rb in enumerate(pieces):
                sync = i == cfg.grad_accum - 1 and j == len(pieces) - 1
                ctx = acc.no_sync(wrapper) if not sync else _null()
                with ctx:
                    chosen, rejected = wrapper(rb)
                    out = rm_loss(chosen, rejected, rb, cfg, len(heads), n_overall, n_attr)
                    # accelerate divides by grad_accum and DDP averages over processes; the losses of the
                    # window's micro-batches on every process already sum to the window mean
                    acc.backward(out["loss"] * cfg.grad_accum * acc.num_processes)
                tally.add(out, float(out["loss"].detach()))
        norm = acc.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else _grad_norm(params)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        metrics = tally.metrics("train", acc)
        metrics.update({"train/grad_norm": float(norm), "train/lr": lr, "train/epoch": step * window * cfg.batch_size / len(data.items)})
        if eval_data is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < num_steps:
            metrics.update(evaluate_pairs(wrapper, eval_data, cfg, heads, layout, tok.pad_token_id, encoder, E))
        if step % cfg.log_every == 0 or step == num_steps:
            run.log(step, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", acc=f"{metrics['train/accuracy']:.3f}")
        if cfg.save_every and step % cfg.save_every == 0 and step < num_steps:
            save_checkpoint(acc, run, step, cfg.keep_checkpoints)
    bar.close()

    # 4. final evaluation, checkpoint, model
    if eval_data is not None:
        final_eval = evaluate_pairs(wrapper, eval_data, cfg, heads, layout, tok.pad_token_id, encoder, E)
        run.log(step, final_eval)
        if acc.is_main_process:
            print("eval: " + ", ".join(f"{k}={v:.4f}" for k, v in final_eval.items() if "accuracy" in k))
    save_checkpoint(acc, run, step, cfg.keep_checkpoints)
    inner = acc.unwrap_model(wrapper).model
    final = save_final(acc, inner, tok, run, merge_lora=True)
    if acc.is_main_process:
        (final / "preftune_rm.json").write_text(json.dumps(info, indent=2))
    run.update_info(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), num_steps=step)
    run.close()
    return final


def evaluate_pairs(wrapper, data: PairData, cfg: RMConfig, heads: list[str], layout: str, pad_id: int,
                   encoder: bool, E: int) -> dict:
    """eval/loss, eval/accuracy, eval/heads/<name>/accuracy ... over a tokenised pair set (no grad)."""
    import torch

    from preftune.batching import length_grouped_batches, pair_length

    lengths = [pair_length(it, layout) for it in data.items]
    batches = length_grouped_batches(lengths, cfg.eval_batch_size, seed=0, shuffle=False)
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
                rb = rb.to(device)
                chosen, rejected = wrapper(rb)
                out = rm_loss(chosen, rejected, rb, cfg, len(heads), *total)
                tally.add(out, float(out["loss"].detach()))
    wrapper.train(was_training)
    return tally.metrics("eval")


def _report_dict(report, counts: dict) -> dict:
    return {"num_rows": report.num_rows, "num_truncated": report.num_truncated, "num_dropped": report.num_dropped,
            "dropped": [[i, why] for i, why in report.dropped[:100]], **counts}


def _grad_norm(params) -> float:
    from preftune.train.common import grad_norm

    return grad_norm(params)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- CLI

def register(sub) -> None:
    from preftune.config import describe

    p = sub.add_parser("rm", help="train a reward model (Bradley-Terry; multi-head; ensembles)",
                       description="Train a reward model on pairs (or rated rows). Config keys (key=value "
                                   "or in --config YAML):\n" + describe(RMConfig),
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model alias, folder or hub name")
    p.add_argument("--data", default=None, help="training pairs file")
    p.add_argument("--out", default=None, help="run folder to create")
    p.add_argument("--eval-data", default=None, help="held-out pairs evaluated during/after training")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (see the list above)")
    p.set_defaults(func=run_train_rm)


def run_train_rm(args) -> int:
    from preftune.config import load_config

    cfg = load_config(RMConfig, args.config, args.overrides,
                      base={"model": args.model, "data": args.data, "out": args.out, "eval_data": args.eval_data})
    final = train_rm(cfg)
    print(f"reward model saved to {final}")
    return 0


# rm_data / rm_loss names stay importable from here (tests and callers use preftune.train.rm)
__all__ = ["MISSING", "VERDICT_CODES", "EnsembleConfig", "PairData", "RMBatch", "RMConfig", "counted_per_batch",
           "load_pairs", "make_collate", "prepare_pairs", "register", "resolve_heads", "rm_loss",
           "train_rm"]
