"""`preftune label init | raters add | admin-token | serve | export`: argument parsing and printing; the work
is in project.py, app.py and export.py (each usable from Python)."""

from __future__ import annotations

import argparse
import sys

_DB_HELP = "the project's database: a SQLite file path, or any SQLAlchemy URL (postgresql://user@host/db)"


def register(sub) -> None:
    p = sub.add_parser("init", help="create a labelling project from a file of candidate pairs",
                       description="Load candidate pairs (prompt + two responses; any format `data convert` "
                                   "reads, with --from) and optional honeypots (pairs with a known answer: their "
                                   "`gold` field, else their `chosen` is the better one) into a new project. "
                                   "Prints one `NAME TOKEN` line per rater and the admin token; tokens are "
                                   "stored hashed and shown only now.")
    p.add_argument("--db", required=True, help=_DB_HELP)
    p.add_argument("--pairs", required=True, metavar="FILE", help="the pairs to label")
    p.add_argument("--from", dest="fmt", default="preftune", metavar="FORMAT",
                   help="the format of --pairs and --honeypots (default preftune; any `data convert --from` name)")
    p.add_argument("--raters", nargs="+", metavar="NAME",
                   help="rater names, or one number N for rater-1..rater-N (more later: `label raters add`)")
    p.add_argument("--per-pair", "--labels-per-pair", dest="per_pair", type=int, default=2, metavar="K",
                   help="different raters per pair (default 2)")
    p.add_argument("--honeypots", "--gold", dest="honeypots", metavar="FILE",
                   help="pairs with a known answer, mixed in at --honeypot-rate")
    p.add_argument("--honeypot-rate", type=float, default=0.1, metavar="R",
                   help="probability that an assignment is a honeypot while regular work remains (default 0.1)")
    p.add_argument("--rubric", metavar="FILE", help="dimensions for per-dimension verdicts, one per line "
                                                    "(default: helpfulness, harmlessness, honesty, style)")
    p.add_argument("--assignment-ttl", type=int, default=3600, metavar="S",
                   help="seconds an open assignment holds its slot before another rater may take it (default 3600)")
    p.add_argument("--force", action="store_true", help="replace a project already in --db (its labels are lost)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("raters", help="add raters to a project", description="Manage the raters of a project.")
    rsub = p.add_subparsers(dest="raters_command", metavar="ACTION")
    p.set_defaults(func=lambda args, p=p: (p.print_help(), 2)[1])
    a = rsub.add_parser("add", help="add raters; prints NAME TOKEN per line",
                        description="Add raters; prints `NAME TOKEN` per line (tokens are stored hashed).")
    a.add_argument("--db", required=True, help=_DB_HELP)
    a.add_argument("names", nargs="+", metavar="NAME")
    a.set_defaults(func=cmd_raters_add)

    p = sub.add_parser("admin-token", help="print a new admin token",
                       description="Create and print one more admin token (earlier ones stay valid).")
    p.add_argument("--db", required=True, help=_DB_HELP)
    p.set_defaults(func=cmd_admin_token)

    p = sub.add_parser("serve", help="serve the rater page, the admin page and the JSON API",
                       description="Start the labelling server (FastAPI under uvicorn). Raters open "
                                   "http://HOST:PORT/#token=TOKEN, the admin http://HOST:PORT/admin#token=TOKEN. "
                                   "The API: GET /api/next, POST /api/labels, GET /api/stats (admin).")
    p.add_argument("--db", required=True, help=_DB_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network, "
                        "put it behind TLS)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--select", default="order", choices=("order", "disagreement", "uncertainty"),
                   help="which pair with a free slot is served next: order (the most advanced, then input order; "
                        "default), disagreement (pairs the raters split on first), uncertainty (pairs the --rm "
                        "reward model or ensemble is least sure of first: predictive entropy, scored at start)")
    p.add_argument("--rm", metavar="RUN", help="reward model run folder (or ensemble) for --select uncertainty")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write every label as preftune pair rows",
                       description="Write one pair row per label with annotator, confidence (from the strength "
                                   "of the choice: 1.0 much better, 0.75 better, 0.5 tie), close (ties), "
                                   "attributes, rationale, shown_first, item, and gold for honeypots.")
    p.add_argument("--db", required=True, help=_DB_HELP)
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ai", help="label pairs with an LLM judge (both orders, per principle of a constitution)",
                       description="Label pairs with a pairwise judge asked in both orders: agreement of the two "
                                   "orders gives confidence (1.0 both, 0.75 one order and a tie), contradiction a "
                                   "tie (close); each principle of the constitution gives an attribute; annotator "
                                   "names the judge; rationale records the verdicts.")
    p.add_argument("--judge", required=True, metavar="SPEC", help="llm:MODEL (a local causal LM) or http:URL "
                                                                  "(an OpenAI-compatible chat endpoint)")
    p.add_argument("--pairs", required=True, metavar="FILE", help="the pairs to label")
    p.add_argument("--from", dest="fmt", default="preftune", metavar="FORMAT", help="the format of --pairs")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--constitution", metavar="FILE",
                   help="YAML list of {name, question} (default: helpfulness, harmlessness, honesty, style)")
    p.add_argument("--judge-model", default="default", help="model name sent to an http: judge (default: default)")
    p.add_argument("--key-env", default="OPENAI_API_KEY", help="environment variable holding an http: judge's key")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="pairs per judge call batch (default 8)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    from preftune.eval.commands import add_http_judge_flags

    add_http_judge_flags(p)  # the same limits as eval policy: no redirects, retries, deadlines, a size cap
    p.set_defaults(func=cmd_ai)


def _print_tokens(tokens: dict[str, str]) -> None:
    for name, token in tokens.items():
        print(f"{name} {token}")


def cmd_init(args: argparse.Namespace) -> int:
    from preftune.label.project import init_project, rater_names, read_rubric

    res = init_project(args.db, args.pairs, raters=rater_names(args.raters), per_pair=args.per_pair,
                       honeypots=args.honeypots, honeypot_rate=args.honeypot_rate, rubric=read_rubric(args.rubric),
                       assignment_ttl_s=args.assignment_ttl, fmt=args.fmt, force=args.force)
    print(f"project in {args.db}: {res.num_pairs} pairs, {res.num_honeypots} honeypots, "
          f"{args.per_pair} labels per pair", file=sys.stderr)
    _print_tokens(res.tokens)
    print(f"admin {res.admin_token}")
    return 0


def cmd_raters_add(args: argparse.Namespace) -> int:
    from preftune.label.project import add_raters, rater_names

    _print_tokens(add_raters(args.db, rater_names(args.names)))
    return 0


def cmd_admin_token(args: argparse.Namespace) -> int:
    from preftune.label.project import new_admin_token

    print(f"admin {new_admin_token(args.db)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from preftune.label.app import create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"preftune: warning: --host {args.host} exposes the labelling server (and its tokens, sent in clear "
              "text over HTTP) to the network; put it behind a TLS proxy", file=sys.stderr)
    if (args.select == "uncertainty") != (args.rm is not None):
        raise ValueError("--select uncertainty needs --rm RUN, and --rm is only used by --select uncertainty")
    if args.rm is not None:
        from preftune.label.select import score_uncertainty
        from preftune.label.store import make_engine, sessions

        engine = make_engine(args.db)
        try:
            with sessions(engine).begin() as s:
                n = score_uncertainty(s, args.rm)
        finally:
            engine.dispose()
        print(f"preftune label: scored {n} pairs with {args.rm} (predictive entropy)", file=sys.stderr)
    app = create_app(args.db, args.select)
    print(f"preftune label: serving {args.db} on http://{args.host}:{args.port}/ (admin: /admin)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from preftune.data.io import write_rows
    from preftune.data.paths import check_outputs, rows_output
    from preftune.label.export import export_rows
    from preftune.label.store import make_engine, read_sessions

    check_outputs([rows_output("-o", args.output)], force=args.force)
    engine = make_engine(args.db)
    try:
        with read_sessions(engine)() as s:
            rows = export_rows(s)
    finally:
        engine.dispose()
    if not rows:
        raise ValueError(f"--db {args.db}: no labels yet; nothing was written")
    n = write_rows(rows, args.output, overwrite=args.force)
    print(f"wrote {n} labels to {args.output}", file=sys.stderr)
    return 0


def cmd_ai(args: argparse.Namespace) -> int:
    import json

    from preftune.data.io import write_rows
    from preftune.data.paths import check_outputs, rows_output
    from preftune.eval.judges import make_judge, parse_judge_spec
    from preftune.label.ai import ai_label, load_constitution
    from preftune.label.project import read_pairs

    check_outputs([rows_output("-o", args.output)], [("--pairs", args.pairs)], force=args.force)
    kind, _ = parse_judge_spec(args.judge)
    if kind.value not in ("llm", "http"):
        raise ValueError(f"--judge {args.judge}: use llm:MODEL or http:URL (a pairwise judge asked in both orders)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    principles = load_constitution(args.constitution)
    pairs = [rec for _, rec in read_pairs(args.pairs, args.fmt)]
    from preftune.eval.commands import http_judge_options

    judge = make_judge(args.judge, judge_model=args.judge_model, key_env=args.key_env,
                       **(http_judge_options(args) if kind.value == "http" else {}))
    rows, summary = ai_label(judge, pairs, principles, batch=args.batch_size)
    n = write_rows(rows, args.output, overwrite=args.force)
    print(json.dumps(summary), file=sys.stderr)
    print(f"wrote {n} judged pairs to {args.output}", file=sys.stderr)
    return 0
