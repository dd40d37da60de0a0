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
    "data": ["preftune.data.commands", "preftune.data.convert", "preftune.world.generate",
             "preftune.label.constitutional"],
    "train": ["preftune.train.commands"],
    "eval": ["preftune.eval.commands", "preftune.eval.rm"],
    "label": ["preftune.label.commands"],
}
GROUP_HELP = {
    "data": "check, convert, curate, split and describe preference data; generate the verifiable world",
    "train": "train an SFT policy, a reward model, or a policy with DPO and its family",
    "eval": "evaluate reward models and policies; run the regression gate",
    "label": "collect comparisons: a labelling server with raters, honeypots and agreement; export pairs",
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


def _yaml_message(e: Exception) -> str:
    """FILE:LINE:COL: problem of a YAML error (PyYAML marks count from 0)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}"


def _os_message(e: OSError) -> str:
    what = e.strerror or str(e)
    return f"{e.filename}: {what}" if e.filename else what


def main(argv: list[str] | None = None) -> int:
    import gzip

    import yaml

    parser = build_parser()
    # KEY=VALUE overrides may come after options too (`train rl ... max_steps=2 --algo ppo kl_in=loss`):
    # argparse gives a positional list one run of tokens, so the later ones are added here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # User errors and the OS errors bad input gives print one line and exit 1; anything else is a
    # bug and keeps its traceback. The order matters: these are subclasses of ValueError / OSError.
    try:
        return int(args.func(args) or 0)
    except UnicodeDecodeError as e:
        print(f"preftune: error: not UTF-8 text ({e.reason} at byte {e.start}): save the file as UTF-8",
              file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"preftune: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"preftune: error: {e.filename or e}: no such file", file=sys.stderr)
        return 1
    except gzip.BadGzipFile as e:
        print(f"preftune: error: not a valid gzip file ({e})", file=sys.stderr)
        return 1
    except EOFError as e:
        print(f"preftune: error: the input ends early (a truncated file?): {e}", file=sys.stderr)
        return 1
    except yaml.YAMLError as e:
        print(f"preftune: error: {_yaml_message(e)}", file=sys.stderr)
        return 1
    except (PermissionError, IsADirectoryError, NotADirectoryError) as e:
        print(f"preftune: error: {_os_message(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        if not e.filename:  # no file to name: not a bad-input error this mapping knows
            raise
        print(f"preftune: error: {_os_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("preftune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
