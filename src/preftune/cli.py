"""The `preftune` command: thin dispatch onto the library's functions.

Each command module defines `register(subparsers)` that adds its own parser(s) with
`set_defaults(func=...)`; a command function takes the parsed args and returns an exit code.
Command modules keep their heavy imports inside the functions, so `preftune --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# group -> modules whose register() adds subcommands to that group ("" = top level)
COMMANDS: dict[str, list[str]] = {
    "": ["preftune.quickstart", "preftune.eval.score", "preftune.eval.bon", "preftune.eval.sample_pairs",
         "preftune.report.commands"],
    "data": ["preftune.data.commands", "preftune.data.convert", "preftune.world.generate"],
    "train": ["preftune.train.commands"],
    "eval": ["preftune.eval.commands", "preftune.eval.rm"],
}
GROUP_HELP = {
    "data": "check, convert, curate, split and describe preference data; generate the verifiable world",
    "train": "train an SFT policy, a reward model, or a policy with DPO and its family",
    "eval": "evaluate reward models and policies; run the regression gate",
}


def build_parser() -> argparse.ArgumentParser:
    from preftune import __version__

    parser = argparse.ArgumentParser(
        prog="preftune",
        description="The whole preference-learning loop: data -> reward models / DPO -> guards -> proof.",
        epilog="Run `preftune COMMAND --help` for a command's options. Errors exit with status 1.")
    parser.add_argument("--version", action="version", version=f"preftune {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {"": top}
    for name, help_text in GROUP_HELP.items():
        gp = top.add_parser(name, help=help_text, description=help_text)
        groups[name] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        gp.set_defaults(func=lambda args, gp=gp: (gp.print_help(), 2)[1])
    for group, modules in COMMANDS.items():
        for mod_name in modules:
            try:
                mod = importlib.import_module(mod_name)
            except ModuleNotFoundError as e:
                if e.name == mod_name:  # a command module not written yet
                    continue
                raise
            mod.register(groups[group])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        print(f"preftune: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"preftune: error: {e.filename or e}: no such file", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("preftune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
