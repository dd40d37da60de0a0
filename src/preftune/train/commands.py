"""`preftune train sft|rm|dpo`: the CLI of the training stages, torch-free so that `--help` is fast.

Every stage takes the same flags (--model, --data, --eval-data, --out, --config) and key=value
overrides of its config (train/configs.py), and lists every key with its default and meaning in
`--help`. The stage module (and torch) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from preftune.config import describe, load_config
from preftune.train.configs import DPOConfig, RLConfig, RMConfig, SFTConfig

# name -> (config class, "module:function", help)
STAGES: dict[str, tuple[type, str, str]] = {
    "sft": (SFTConfig, "preftune.train.sft:train_sft",
            "supervised fine-tuning on chat rows, prompt/completion rows or chosen responses"),
    "rm": (RMConfig, "preftune.train.rm:train_rm",
           "train a reward model on pairs or rated rows (Bradley-Terry; margins, ties, multi-head, ensembles)"),
    "dpo": (DPOConfig, "preftune.train.dpo:train_dpo",
            "train a policy with DPO or a relative (ipo, simpo, orpo, kto, ... or a mix)"),
    "rl": (RLConfig, "preftune.train.rl:train_rl",
           ("online RL (grpo, rloo, ppo, online_dpo) against a verifiable reward, a reward model or a function, "
           "with a KL anchor")),
}


def add_train_parser(sub, name: str, help_text: str, cfg_cls: type, func: Callable) -> argparse.ArgumentParser:
    """`preftune train NAME --model M --data D --out O [--eval-data E] [--config FILE] [key=value ...]`."""
    p = sub.add_parser(name, help=help_text, description=help_text,
                       epilog="config keys (key=value):\n" + describe(cfg_cls),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model alias, folder or hub name (config key: model)")
    p.add_argument("--data", help="training file (config key: data)")
    p.add_argument("--eval-data", dest="eval_data", help="held-out file (config key: eval_data)")
    p.add_argument("--out", help="run folder to create (config key: out)")
    p.add_argument("--config", help="YAML config file; flags and key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"config overrides, e.g. {_example(cfg_cls)}")
    p.set_defaults(func=func)
    return p


def _example(cfg_cls: type) -> str:
    return {DPOConfig: "beta=0.1 lora.enabled=true", RMConfig: "heads=[auto] ensemble.size=4",
            RLConfig: "num_generations=8 kl_coef=0.02 lora.enabled=true"}.get(
        cfg_cls, "lr=1e-5 lora.enabled=true")


def config_from_args(cfg_cls: type, args):
    base = {"model": args.model, "data": args.data, "eval_data": args.eval_data, "out": args.out}
    for key in ("algo", "reward"):  # train rl's own flags
        if getattr(args, key, None) is not None:
            base[key] = getattr(args, key)
    if getattr(args, "prompts", None) is not None:
        base["data"] = args.prompts
    if getattr(args, "eval_prompts", None) is not None:
        base["eval_data"] = args.eval_prompts
    return load_config(cfg_cls, args.config, list(args.overrides or []), base=base)


def _runner(name: str) -> Callable:
    cfg_cls, target, _ = STAGES[name]

    def run(args) -> int:
        cfg = config_from_args(cfg_cls, args)  # every key checked before torch is imported
        module, fn = target.split(":")
        kwargs = _rl_judge(cfg) if name == "rl" else {}
        final = getattr(importlib.import_module(module), fn)(cfg, **kwargs)
        print(f"{'reward model saved to' if name == 'rm' else 'final model:'} {final}")
        if name == "rl":
            _rl_guard(cfg)
        return 0
    return run


def _rl_judge(cfg) -> dict:
    """A `judge:SPEC` reward: the judge (eval layer) is built here and handed to train_rl."""
    from preftune.train.rewards import parse_reward_spec

    first = parse_reward_spec(cfg.reward)[0]
    if first.kind != "judge":
        return {}
    from preftune.eval.judges import make_judge

    return {"judge": make_judge(first.arg)}


def _rl_guard(cfg) -> None:
    """The over-optimisation guard on the run's evaluations: eval/proxy (the training reward) against
    eval/reward (the held-out judge) along the steps; RUN/eval/overoptimisation.json, warnings on stderr."""
    import json
    import sys
    from pathlib import Path

    rows = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "eval/proxy" in r and "eval/reward" in r]
    if len(rows) < 2:
        return
    from preftune.eval.guards import overoptimisation_report

    report = overoptimisation_report([r["step"] for r in rows], [r["eval/proxy"] for r in rows],
                                     [r["eval/reward"] for r in rows], x_name="step")
    out = Path(cfg.out) / "eval" / "overoptimisation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for w in report.get("warnings", []):
        print(f"preftune: warning: {w}", file=sys.stderr)


def register(sub) -> None:
    for name, (cfg_cls, _, help_text) in STAGES.items():
        p = add_train_parser(sub, name, help_text, cfg_cls, _runner(name))
        if name == "rl":
            p.add_argument("--prompts", help="prompts file: a `prompt` per row (config key: data)")
            p.add_argument("--eval-prompts", dest="eval_prompts",
                           help="held-out prompts scored by eval_reward during training (config key: eval_data)")
            p.add_argument("--algo", help="grpo | rloo | ppo | online_dpo (config key: algo)")
            p.add_argument("--reward", help="reward spec, e.g. gold, rm:RUN, py:module:function, gold:1,rm:RUN:0.5, "
                                            "judge:SPEC (online_dpo) (config key: reward)")
