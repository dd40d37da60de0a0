"""`preftune report RUN [-o FILE] [--force] [--related RUN2 ...]` and
`preftune report --compare RUN_A RUN_B [...] -o FILE`: self-contained HTML pages of run folders.

Registered at the top level. The report modules (and matplotlib) are imported only when the command
runs, so `preftune --help` stays fast.
"""

from __future__ import annotations

import argparse


def cmd_report(args: argparse.Namespace) -> int:
    if args.compare:
        from preftune.report.compare import write_compare

        if args.run is not None:
            raise ValueError("give the runs to compare after --compare only (got RUN as well): "
                             "preftune report --compare RUN_A RUN_B -o compare.html")
        path = write_compare(args.compare, args.output, force=args.force)
    else:
        from preftune.report.html import write_report

        if args.run is None:
            raise ValueError("preftune report needs a RUN folder (or --compare RUN_A RUN_B -o FILE)")
        path = write_report(args.run, args.output, force=args.force, related=args.related or ())
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write one self-contained HTML report of a run folder (or compare several)",
        description="Write one self-contained HTML page (inline plots, no network needed to view it) from a "
                    "run folder: a headline that says whether the model got better (win rate and its interval, "
                    "KL, regressions; or a reward model's accuracy against the length baseline), the warnings, "
                    "the judged answers side by side, the regression cases, provenance (reference, data origin, "
                    "judge), training curves, reward distributions, calibration, length bias. With --compare, "
                    "one page of several runs side by side. Only reads files; never runs a model. Prints the "
                    "page's path.")
    p.add_argument("run", metavar="RUN", nargs="?", default=None,
                   help="run folder (holds run.json and/or metrics.jsonl)")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="where to write the page (default: RUN/report.html, which is always rewritten; "
                        "required with --compare)")
    p.add_argument("--force", action="store_true", help="overwrite FILE when it exists and is not RUN/report.html")
    p.add_argument("--related", metavar="RUN2", nargs="+", default=None,
                   help="other run folders to link from the provenance section (e.g. the reward model run), "
                        "with their own headline number")
    p.add_argument("--compare", metavar="RUN", nargs="+", default=None,
                   help="compare these run folders on one page: headline numbers in one table, config "
                        "differences, overlaid training curves, the same prompts' answers from each run")
    p.set_defaults(func=cmd_report)
