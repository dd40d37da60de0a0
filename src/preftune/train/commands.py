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
from preftune.train.configs import DPOConfig, RMConfig, SFTConfig

# name -> (config class, "module:function", help)
STAGES: dict[str, tuple[type, str, str]] = {
    "sft": (SFTConfig, "preftune.train.sft:train_sft",
            "supervised fine-tuning on chat rows, prompt/completion rows or chosen responses"),
    "rm": (RMConfig, "preftune.train.rm:train_rm",
           "train a reward model on pairs or rated rows (Bradley-Terry; margins, ties, multi-head, ensembles)"),
    "dpo": (DPOConfig, "preftune.train.dpo:train_dpo",
            "train a policy with DPO or a relative (ipo, simpo, orpo, kto, ... or a mix)"),
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
    return {DPOConfig: "beta=0.1 lora.enabled=true", RMConfig: "heads=[auto] ensemble.size=4"}.get(
        cfg_cls, "lr=1e-5 lora.enabled=true")


def config_from_args(cfg_cls: type, args):
    base = {"model": args.model, "data": args.data, "eval_data": args.eval_data, "out": args.out}
    return load_config(cfg_cls, args.config, list(args.overrides or []), base=base)


def _runner(name: str) -> Callable:
    cfg_cls, target, _ = STAGES[name]

    def run(args) -> int:
        cfg = config_from_args(cfg_cls, args)  # every key checked before torch is imported
        module, fn = target.split(":")
        final = getattr(importlib.import_module(module), fn)(cfg)
        print(f"{'reward model saved to' if name == 'rm' else 'final model:'} {final}")
        return 0
    return run


def register(sub) -> None:
    for name, (cfg_cls, _, help_text) in STAGES.items():
        add_train_parser(sub, name, help_text, cfg_cls, _runner(name))
