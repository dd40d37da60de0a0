"""The configs of every training stage, in one torch-free module: `--help` lists them and loading
checks them (types, choices, ranges) before any model or run folder exists.

Each field is documented once, right under it (`opt(default, help)`). Choices are `Literal`s, which
`preftune.config` checks when the config loads; `validate()` checks what a type cannot say (ranges,
combinations). Stage modules import their config from here (and re-export it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from preftune.config import opt

OnOverlong = Literal["truncate", "drop", "error"]
TrainOn = Literal["chosen_only", "all_assistant"]
Scheduler = Literal["linear", "cosine", "constant"]
DType = Literal["float32", "bfloat16", "float16"]
MixedPrecision = Literal["no", "bf16", "fp16"]
ReportTo = Literal["auto", "tensorboard", "none"]


@dataclass
class LoraConfig:
    enabled: bool = opt(False, "train LoRA adapters instead of all weights (needs `pip install peft`)")
    r: int = opt(16, "LoRA rank")
    alpha: int = opt(32, "LoRA alpha (scaling = alpha / r)")
    dropout: float = opt(0.0, "dropout on the LoRA path")
    target_modules: list[str] = opt(help="module names to adapt; empty = all linear layers of the backbone",
                                    factory=list)


@dataclass
class TrainConfig:
    """Fields shared by every stage. Stages subclass it and add their own."""
    model: str = opt("", "model alias (smollm2-135m, minilm-l6, tiny-llama, tiny-bert), local folder or hub name")
    data: str = opt("", "training file (jsonl/json/csv/parquet/datasets folder)")
    eval_data: str | None = opt(None, "held-out file evaluated every eval_every steps and at the end")
    out: str = opt("", "run folder to create")
    seed: int = opt(0, "seed for init, data order and dropout")
    epochs: float = opt(1.0, "passes over the data (fractions allowed)")
    max_steps: int = opt(-1, "stop after this many optimiser steps (-1: use epochs)")
    batch_size: int = opt(8, "pairs (or sequences) per device per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimiser step")
    lr: float = opt(5e-5, "peak learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    warmup_ratio: float = opt(0.0, "share of steps with linear warm-up")
    scheduler: Scheduler = opt("linear", "lr schedule after warm-up: linear | cosine | constant")
    max_grad_norm: float = opt(1.0, "gradient clipping (0 = off)")
    max_length: int = opt(1024, "max tokens of prompt + response")
    max_prompt_length: int | None = opt(None, "max prompt tokens (default: half of max_length when truncating)")
    on_overlong: OnOverlong = opt("truncate", "rows longer than max_length: truncate (counted) | drop (reported) "
                                              "| error")
    train_on: TrainOn = opt("chosen_only", "which tokens train: chosen_only (the response's assistant turns) | "
                                           "all_assistant (also the prompt trajectory's); tool results never do")
    log_every: int = opt(1, "log metrics every N optimiser steps")
    eval_every: int = opt(0, "evaluate on eval_data every N steps (0 = only at the end)")
    save_every: int = opt(0, "save a resumable checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = opt(2, "how many step checkpoints to keep")
    resume: bool = opt(False, "resume from the latest intact checkpoint in `out` (same config and data, "
                              "except the keys in resume_allow_changes)")
    resume_allow_changes: list[str] = opt(help="on resume, config keys allowed to differ from the run's "
                                               "(e.g. [max_steps, eval_every]; `data` allows changed data files)",
                                          factory=list)
    overwrite: bool = opt(False, "replace an existing non-empty run folder")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    dtype: DType = opt("float32", "weights dtype: float32 | bfloat16")
    mixed_precision: MixedPrecision = opt("no", "accelerate mixed precision: no | bf16 | fp16")
    num_threads: int = opt(0, "torch CPU threads (0 = auto: torch's default, or 1 when the CPU is already busy)")
    lora: LoraConfig = opt(help="LoRA settings", factory=LoraConfig)
    report_to: ReportTo = opt("auto", "also log to: auto (tensorboard when installed) | tensorboard | none")

    def validate(self) -> None:
        for name in ("model", "data", "out"):
            if not getattr(self, name):
                raise ValueError(f"config key {name!r} is required (give --{name.replace('_', '-')} or {name}=...)")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        check_ranges(self, [
            ("lr", self.lr >= 0, ">= 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio <= 1, "in [0, 1]"),
            ("max_grad_norm", self.max_grad_norm >= 0, ">= 0 (0 = no clipping)"),
            ("epochs", self.epochs > 0, "> 0"),
            ("max_steps", self.max_steps == -1 or self.max_steps >= 1, "-1 (use epochs) or >= 1"),
            ("max_length", self.max_length >= 2, ">= 2"),
            ("max_prompt_length", self.max_prompt_length is None or 1 <= self.max_prompt_length < self.max_length,
             "in [1, max_length)"),
            ("log_every", self.log_every >= 1, ">= 1"),
            ("eval_every", self.eval_every >= 0, ">= 0 (0 = only at the end)"),
            ("save_every", self.save_every >= -1, "-1 (never), 0 (only at the end) or >= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1"), ("num_threads", self.num_threads >= 0, ">= 0"),
            ("lora.r", self.lora.r >= 1, ">= 1"), ("lora.alpha", self.lora.alpha > 0, "> 0"),
            ("lora.dropout", 0 <= self.lora.dropout < 1, "in [0, 1)")])
        if self.eval_every and not self.eval_data:
            warn_config(f"eval_every={self.eval_every} has no effect without eval_data")


def check_ranges(cfg, checks: list[tuple[str, bool, str]]) -> None:
    """ValueError naming the first key whose value is out of range (each check: key, ok, what it must be)."""
    for key, ok, rule in checks:
        if not ok:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            raise ValueError(f"{key}: must be {rule}, got {value!r}")


_WARNED: set[str] = set()


def warn_config(message: str) -> None:
    """A config warning, once per process (a config is validated when it loads and when a stage starts)."""
    import sys

    if message not in _WARNED:
        _WARNED.add(message)
        print(f"preftune: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- SFT

@dataclass
class SFTConfig(TrainConfig):
    layout: Literal["packed", "padded"] = opt("packed", "packed (several sequences per row, no padding) | padded")
    pack_tokens: int = opt(0, "layout=packed: tokens per packed row (0 = max_length)")
    chunk_size: int = opt(1024, "completion tokens per LM-head chunk (bounds the logits memory)")
    merge_lora: bool = opt(False, "with LoRA: also write RUN/final/merged, the base with the adapter folded in")

    def validate(self) -> None:
        super().validate()
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        check_ranges(self, [("pack_tokens", self.pack_tokens >= 0, ">= 0 (0 = max_length)")])


# --------------------------------------------------------------------------- reward models

@dataclass
class EnsembleConfig:
    size: int = opt(1, "ensemble size K (1 = a single reward model)")
    mode: Literal["heads", "members"] = opt(
        "heads", "heads: K heads on one backbone, each on its own bootstrap resample of the pairs | members: "
                 "K models trained apart (seeds seed..seed+K-1, own data order)")
    bootstrap: bool = opt(True, "heads mode: weight each pair by a Poisson(1) bootstrap count per head")


@dataclass
class RMConfig(TrainConfig):
    lr: float = opt(2e-5, "peak learning rate")
    layout: Literal["auto", "padded", "shared", "packed"] = opt(
        "auto", "batch layout: auto (shared prompt for decoders, padded for encoders) | padded | shared "
                "| packed (decoders: several prompt-shared pairs per row, no padding)")
    margin_scale: float = opt(0.0, "BT margin m = margin_scale * row `margin` (0 = no margin; Llama 2 style)")
    center_coef: float = opt(0.0, "reward centering: + coef * mean((r_chosen + r_rejected)^2)")
    confidence: Literal["off", "soft", "weight"] = opt(
        "off", "use the row's `confidence`: off | soft (target probability) | weight (loss weight)")
    label_smoothing: float = opt(0.0, "target 1 - eps for chosen (conservative BT)")
    ties: Literal["skip", "half", "rao_kupper"] = opt(
        "skip", "rows with close: true are ties: skip | half (target 1/2) | rao_kupper")
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
        check_ranges(self, [
            ("center_coef", self.center_coef >= 0, ">= 0"),
            ("attribute_loss_weight", self.attribute_loss_weight >= 0, ">= 0"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ("rated_min_margin", self.rated_min_margin >= 0, ">= 0"),
            ("rao_kupper_log_theta", self.rao_kupper_log_theta > 0, "> 0 (the tie width)")])
        if self.margin_scale < 0:
            warn_config(f"margin_scale={self.margin_scale} < 0: a larger row margin now asks for a SMALLER reward "
                        "gap between chosen and rejected")


# --------------------------------------------------------------------------- DPO family

Reference = Literal["auto", "model", "adapter", "cache", "none"]


@dataclass
class DPOConfig(TrainConfig):
    loss: str = opt("sigmoid", "loss name or weighted mix, e.g. sigmoid | ipo | simpo | kto | sigmoid:1,sft:0.1 (RPO)")
    beta: float = opt(0.1, "β: strength of the implicit KL to the reference (λ for ORPO, τ for IPO)")
    label_smoothing: float = opt(0.0, "cDPO smoothing (sigmoid, simpo), flip rate ε (robust, exo_pair)")
    reference: Reference = opt("auto", "model (a frozen copy) | adapter (LoRA off = the reference) | cache "
                                       "(reference log-probs computed once, kept on disk) | none (SimPO/ORPO) | auto")
    ref_model: str | None = opt(None, "reference model for reference=model|cache (default: the policy's start)")
    ref_cache_dir: str | None = opt(None, "where reference=cache keeps its files (default: $PREFTUNE_CACHE/refcache)")
    layout: Literal["shared", "padded", "packed"] = opt(
        "shared", "pair layout: shared (prompt computed once per pair) | padded | packed (padding-free)")
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
        from preftune.losses.spec import LossMix

        return LossMix.parse(self.loss)

    def loss_params(self):
        """The scalar settings the losses read (losses.preference.PreferenceLossParams)."""
        from preftune.losses.preference import PreferenceLossParams

        return PreferenceLossParams(
            beta=self.beta, label_smoothing=self.label_smoothing, ipo_normalize_length=self.ipo_normalize_length,
            simpo_gamma=self.simpo_gamma, discopop_tau=self.discopop_tau, bco_delta=self.bco_delta,
            desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight)

    def resolved_reference(self) -> str:
        if self.reference != "auto":
            return self.reference
        if not self.loss_mix().needs_reference:
            return "none"
        return "adapter" if self.lora.enabled else "model"

    def validate(self) -> None:
        super().validate()
        from preftune.losses.spec import LossType

        mix = self.loss_mix()  # ValueError listing the valid names for an unknown one
        ref = self.resolved_reference()
        if mix.needs_reference and ref == "none":
            need = [t.value for t, _ in mix.terms if t.needs_reference]
            free = ", ".join(t.value for t in LossType if not t.needs_reference)
            raise ValueError(f"loss {', '.join(need)} needs a reference model but reference=none; use "
                             f"reference=model|adapter|cache, or a reference-free loss ({free})")
        if ref == "adapter" and not self.lora.enabled:
            raise ValueError("reference=adapter needs lora.enabled=true "
                             "(the reference is the base with the adapter off)")
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
        exo = any(t is LossType.EXO_PAIR for t, _ in mix.terms)
        check_ranges(self, [
            ("beta", self.beta > 0, "> 0"),
            ("label_smoothing", 0 < self.label_smoothing < 1 if exo else 0 <= self.label_smoothing < 0.5,
             "in (0, 1) for exo_pair" if exo else "in [0, 0.5)"),
            ("discopop_tau", self.discopop_tau > 0, "> 0"),
            ("desirable_weight", self.desirable_weight > 0, "> 0"),
            ("undesirable_weight", self.undesirable_weight > 0, "> 0"),
            ("pack_tokens", self.pack_tokens >= 0, ">= 0 (0 = 2 x max_length)")])
        if self.use_margin and self.margin_scale < 0:
            warn_config(f"margin_scale={self.margin_scale} < 0 turns each row's margin into a handicap of chosen")


# --------------------------------------------------------------------------- online RL

RLAlgo = Literal["grpo", "rloo", "ppo", "online_dpo"]


@dataclass
class RLConfig(TrainConfig):
    """Online RL: `data` is the prompts file; batch_size counts prompts (each sampled num_generations times)."""
    lr: float = opt(1e-5, "peak learning rate")
    max_length: int = opt(512, "max prompt tokens + max_new_tokens")
    algo: RLAlgo = opt("grpo", "grpo | rloo | ppo | online_dpo")
    reward: str = opt("gold", "reward spec, weighted components: gold | rm:RUN | py:module:function, e.g. "
                              "gold:1,rm:runs/rm:0.5")
    uncertainty_coef: float = opt(0.0, "rm: rewards minus uncertainty_coef x the ensemble's std (an ensemble RM)")
    num_generations: int = opt(4, "G: samples per prompt (online_dpo: 2 or more, best vs worst)")
    max_new_tokens: int = opt(64, "most tokens sampled per completion")
    temperature: float = opt(1.0, "sampling temperature (the training forward divides the logits by it too)")
    top_p: float = opt(1.0, "nucleus sampling (1 = off)")
    top_k: int = opt(0, "top-k sampling (0 = off)")
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = opt(
        "grpo", "grpo (per-sequence token mean) | dr_grpo (length-unbiased, constant normaliser) | dapo "
                "(token-level mean, clip-higher)")
    scale_rewards: Literal["group", "batch", "none"] = opt("group", "divide advantages by the reward std of "
                                                                    "the group | the batch | nothing (Dr. GRPO)")
    epsilon: float = opt(0.2, "clip range of the importance ratio (the lower one with epsilon_high)")
    epsilon_high: float | None = opt(None, "DAPO clip-higher upper range (default: epsilon)")
    num_iterations: int = opt(1, "optimisation passes over each rollout batch (PPO's epochs; GRPO's mu)")
    kl_coef: float = opt(0.04, "KL(policy || reference) coefficient (0 = no reference pass, TRL's default)")
    kl_estimator: Literal["k1", "k2", "k3"] = opt("k3", "KL estimator (Schulman 2020): k3 in the loss, k1 in "
                                                        "the reward are the usual choices")
    kl_in: Literal["auto", "loss", "reward"] = opt(
        "auto", "where the KL penalty goes: loss | reward | auto (loss for grpo and online_dpo, reward for rloo "
                "and ppo, as their papers)")
    kl_target: float | None = opt(None, "adaptive KL: the coefficient moves to keep KL near this (Ziegler 2019)")
    kl_horizon: float = opt(10000.0, "adaptive KL horizon (samples)")
    truncated: Literal["none", "mask", "penalty"] = opt(
        "none", "completions without EOS within max_new_tokens: none (as any other) | mask (no loss) | penalty")
    truncated_penalty: float = opt(1.0, "truncated=penalty: subtracted from a truncated completion's reward")
    vf_coef: float = opt(0.1, "PPO: weight of the value loss")
    cliprange_value: float = opt(0.2, "PPO: clip range of the value update")
    gamma: float = opt(1.0, "PPO: discount")
    lam: float = opt(0.95, "PPO: GAE lambda")
    dpo_beta: float = opt(0.1, "online_dpo: beta of the DPO loss on the fresh pair")
    dpo_loss: str = opt("sigmoid", "online_dpo: DPO-family loss on the fresh pair (e.g. sigmoid, ipo)")
    eval_reward: str = opt("gold", "the held-out score logged on eval_data prompts (a reward spec)")
    chunk_size: int = opt(1024, "completion tokens per LM-head chunk (bounds the logits memory)")
    merge_lora: bool = opt(False, "with LoRA: also write RUN/final/merged, the base with the adapter folded in")

    def validate(self) -> None:
        super().validate()
        from preftune.losses.spec import LossMix
        from preftune.train.rewards import parse_reward_spec

        parse_reward_spec(self.reward)  # ValueError naming the bad component
        parse_reward_spec(self.eval_reward)
        if self.algo == "online_dpo":
            LossMix.parse(self.dpo_loss)
        check_ranges(self, [
            ("num_generations", self.num_generations >= 2 or self.algo == "ppo",
             ">= 2 (the group baseline of grpo/rloo and the pair of online_dpo need two samples)"),
            ("num_generations", self.num_generations >= 1, ">= 1"),
            ("max_new_tokens", 1 <= self.max_new_tokens < self.max_length, "in [1, max_length)"),
            ("temperature", self.temperature > 0, "> 0"), ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("top_k", self.top_k >= 0, ">= 0"), ("epsilon", 0 < self.epsilon < 1, "in (0, 1)"),
            ("epsilon_high", self.epsilon_high is None or self.epsilon_high > 0, "> 0"),
            ("num_iterations", self.num_iterations >= 1, ">= 1"), ("kl_coef", self.kl_coef >= 0, ">= 0"),
            ("kl_target", self.kl_target is None or self.kl_target > 0, "> 0"),
            ("kl_horizon", self.kl_horizon > 0, "> 0"), ("uncertainty_coef", self.uncertainty_coef >= 0, ">= 0"),
            ("vf_coef", self.vf_coef >= 0, ">= 0"), ("cliprange_value", self.cliprange_value > 0, "> 0"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"), ("lam", 0 <= self.lam <= 1, "in [0, 1]"),
            ("dpo_beta", self.dpo_beta > 0, "> 0"), ("chunk_size", self.chunk_size >= 1, ">= 1")])
        if self.algo == "ppo" and self.kl_in == "loss":
            raise ValueError("kl_in=loss: PPO puts the KL penalty in the per-token reward (Ziegler et al. 2019); "
                             "use kl_in=reward or auto")
        if self.kl_target is not None and self.kl_coef == 0:
            raise ValueError("kl_target needs kl_coef > 0 (the adaptive coefficient starts there)")

    def kl_placement(self) -> str:
        if self.kl_in != "auto":
            return self.kl_in
        return "reward" if self.algo in ("rloo", "ppo") else "loss"
