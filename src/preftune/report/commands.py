"""`preftune report RUN [-o FILE] [--force]`: one self-contained HTML page of a run folder.

Registered at the top level. The report modules (and matplotlib) are imported only when the command
runs, so `preftune --help` stays fast.
"""

from __future__ import annotations

import argparse


def cmd_report(args: argparse.Namespace) -> int:
    from preftune.report.html import write_report

    path = write_report(args.run, args.output, force=args.force)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write one self-contained HTML report of a run folder",
        description="Write one self-contained HTML page (inline plots, no network needed to view it) from a "
                    "run folder: header, warnings, resolved config, data provenance, training curves, reward "
                    "distributions, calibration, length bias, win-rate and regression tables. Only reads files; "
                    "never runs a model. Prints the report's path.")
    p.add_argument("run", metavar="RUN", help="run folder (holds run.json and/or metrics.jsonl)")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="where to write the page (default: RUN/report.html, which is always rewritten)")
    p.add_argument("--force", action="store_true", help="overwrite FILE when it exists and is not RUN/report.html")
    p.set_defaults(func=cmd_report)
