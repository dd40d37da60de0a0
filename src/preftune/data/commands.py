"""`preftune data check | stats | curate | split`: argument parsing and printing only; the work is
done by validate.py, stats.py, curate.py and split.py (each usable from Python)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_MAX_LISTED = 20  # invalid rows listed in an error before pointing at `preftune data check`


def register(sub) -> None:
    p = sub.add_parser("check", help="validate every row; print every problem as FILE:LINE: field: message",
                       description="Validate every row of a preference file (any supported format) and print "
                                   "every problem with its line. Exit 0 when clean, 1 when not.")
    p.add_argument("file")
    p.add_argument("--max-problems", type=int, default=None, metavar="N",
                   help="print at most N problems (the summary still counts them all)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("stats", help="counts, lengths, length bias, annotators, labeller disagreement",
                       description="Describe a preference file. Lengths are in tokens with --tokenizer, "
                                   "else characters and words. JSON keys: see preftune.data.stats.")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON (stable keys)")
    p.add_argument("--tokenizer", metavar="MODEL", help="measure lengths in this model's tokens")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("curate", help="remove duplicates, conflicts, empty/identical/over-length pairs, test leaks",
                       description="Write the kept rows to OUT and a JSON report listing every removed row "
                                   "with its line, id and reason.")
    p.add_argument("input", metavar="IN")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--report", metavar="REPORT.json", help="where to write the report (default: OUT.report.json)")
    p.add_argument("--test-file", action="append", default=[], metavar="T",
                   help="remove rows whose prompt appears in this file (repeatable)")
    p.add_argument("--tokenizer", metavar="MODEL", help="tokenizer for --max-length")
    p.add_argument("--max-length", type=int, metavar="N", help="remove rows whose prompt + longest response "
                                                                "exceeds N tokens (needs --tokenizer)")
    p.add_argument("--near-dup-threshold", type=float, default=0.9, metavar="J",
                   help="word-shingle Jaccard similarity at which responses are near duplicates (default 0.9; "
                        "1 keeps only exact matches of the shingle sets)")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop rows that fail validation (listed in the report) instead of stopping")
    p.add_argument("--audit", metavar="AUDIT.json", help="an audit report of IN (`preftune data audit IN --json "
                                                         "AUDIT.json`) to act on with one of the next three")
    p.add_argument("--drop-suspected", metavar="Q", help="remove the most suspected rows: a share (0.1, 10%%) or a "
                                                         "threshold (score:0.9)")
    p.add_argument("--flip-suspected", metavar="Q", help="swap chosen and rejected of the most suspected rows (Q as "
                                                         "for --drop-suspected); each flip is listed in `changed`")
    p.add_argument("--aggregate", choices=("majority", "dawid-skene"),
                   help="turn each multi-labelled item into one pair with `confidence` = the winning share or "
                        "the Dawid-Skene posterior")
    p.add_argument("--force", action="store_true", help="overwrite OUT and the report if they exist")
    p.set_defaults(func=cmd_curate)

    _register_audit(sub)

    p = sub.add_parser("split", help="train/test split by prompt (no prompt in both)",
                       description="Split by normalised prompt so that no prompt is in both splits; "
                                   "deterministic for a seed. Writes DIR/train.EXT and DIR/test.EXT.")
    p.add_argument("input", metavar="IN")
    p.add_argument("--test-frac", type=float, required=True, metavar="F")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite existing split files")
    p.set_defaults(func=cmd_split)


def load_rows(path: str):
    """(rows, records, lines, invalid): the raw dicts and parsed records of the valid rows with their
    lines, and (line, "field: message; ...") for every invalid row."""
    from preftune.data.io import iter_raw
    from preftune.data.records import parse_row

    rows, records, lines, invalid = [], [], [], []
    for raw in iter_raw(path):
        if raw.error is not None:
            invalid.append((raw.line, raw.error))
            continue
        rec, problems = parse_row(raw.row)
        if problems:
            invalid.append((raw.line, "; ".join(str(p) for p in problems)))
        else:
            rows.append(raw.row)
            records.append(rec)
            lines.append(raw.line)
    return rows, records, lines, invalid


def _invalid_error(path: str, invalid: list, hint: str) -> ValueError:
    shown = "\n".join(f"{path}:{line}: {msg}" for line, msg in invalid[:_MAX_LISTED])
    more = f"\n... and {len(invalid) - _MAX_LISTED} more" if len(invalid) > _MAX_LISTED else ""
    return ValueError(f"{path}: {len(invalid)} invalid row(s); nothing was written ({hint}).\n{shown}{more}")


def cmd_check(args: argparse.Namespace) -> int:
    from preftune.data.validate import check_path

    res = check_path(args.file)
    if args.json:
        print(json.dumps({"file": args.file, "num_rows": res.num_rows, "num_rows_with_problems": res.num_bad_rows,
                          "num_problems": len(res.problems), "problems": [p.to_dict() for p in res.problems]},
                         indent=1))
        return 0 if res.ok else 1
    limit = len(res.problems) if args.max_problems is None else max(0, args.max_problems)
    for p in res.problems[:limit]:
        print(p)
    if len(res.problems) > limit:
        print(f"... and {len(res.problems) - limit} more problem(s) (raise --max-problems to see them)")
    print(f"{args.file}: {res.num_rows} rows, {res.num_bad_rows} with problems"
          + ("" if res.ok else f" ({len(res.problems)} problems)"))
    return 0 if res.ok else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from preftune.data.io import read_records
    from preftune.data.stats import compute_stats, format_stats

    records = read_records(args.file)
    tokenizer = None
    if args.tokenizer:
        from preftune.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    s = compute_stats(records, tokenizer)
    if args.json:
        print(json.dumps({"file": args.file, **s}, indent=1))
    else:
        print(format_stats(s, args.file))
    return 0


def cmd_curate(args: argparse.Namespace) -> int:
    from preftune.data.curate import Reason, Removal, curate_records, load_test_prompts, merge_removals
    from preftune.data.io import write_rows
    from preftune.data.paths import check_outputs, rows_output

    out = Path(args.output)
    report = Path(args.report) if args.report else out.with_name(out.name + ".report.json")
    if out.resolve() == Path(args.input).resolve():
        raise ValueError(f"{out}: the output would replace the input; write to another file")
    check_outputs([rows_output("-o", out), ("--report", report)],
                  [("IN", args.input)] + [("--test-file", t) for t in args.test_file]
                  + ([("--audit", args.audit)] if args.audit else []), force=args.force)
    audit = _read_audit(args)
    if args.max_length is not None and not args.tokenizer:
        raise ValueError("--max-length needs --tokenizer MODEL (lengths are counted in that model's tokens)")
    rows, records, lines, invalid = load_rows(args.input)
    if not rows and not invalid:
        raise ValueError(f"{args.input}: no rows; nothing was written")
    if invalid and not args.drop_invalid:
        raise _invalid_error(args.input, invalid, "pass --drop-invalid to drop them into the report")
    if not rows:
        raise _invalid_error(args.input, invalid, "no valid row is left to keep")
    tokenizer = None
    if args.tokenizer and args.max_length is not None:
        from preftune.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    acted, changed = [], []
    if audit is not None:
        from preftune.data.curate_audit import apply_audit, parse_selection

        acts = apply_audit(rows, records, lines, audit, args.audit,
                           drop=(parse_selection(args.drop_suspected, "--drop-suspected")
                                 if args.drop_suspected else None),
                           flip=(parse_selection(args.flip_suspected, "--flip-suspected")
                                 if args.flip_suspected else None),
                           aggregate=args.aggregate)
        rows, records, lines, acted, changed = acts.rows, acts.records, acts.lines, acts.removed, acts.changed
    result = curate_records(records, lines=lines, test_prompts=load_test_prompts(args.test_file),
                            tokenizer=tokenizer, max_length=args.max_length,
                            near_dup_threshold=args.near_dup_threshold)
    result = merge_removals(result, [Removal(line, None, Reason.INVALID, msg) for line, msg in invalid] + acted)
    write_rows([rows[i] for i in result.kept_indices], out, overwrite=args.force)
    body = {"input": args.input, "output": str(out), "test_files": args.test_file,
            "near_dup_threshold": args.near_dup_threshold, "max_length": args.max_length,
            "tokenizer": args.tokenizer if tokenizer is not None else None, **result.report(),
            "audit": args.audit, "num_changed": len(changed), "changed": changed}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items()) or "nothing"
    print(f"{args.input}: kept {len(result.kept)} of {result.num_input} rows -> {out}")
    print(f"removed {len(result.removed)}: {counts}")
    if audit is not None:
        print(f"changed {len(changed)} row(s) from the audit (each listed in the report's `changed`)")
    print(f"report (every removed row with its line and reason): {report}")
    return 0


def _read_audit(args: argparse.Namespace) -> dict | None:
    actions = [a for a in (args.drop_suspected, args.flip_suspected, args.aggregate) if a]
    if not args.audit:
        if actions:
            raise ValueError(
                "--drop-suspected / --flip-suspected / --aggregate act on an audit: give --audit AUDIT.json")
        return None
    if not actions:
        raise ValueError("--audit needs an action: --drop-suspected Q, --flip-suspected Q or --aggregate HOW")
    try:
        audit = json.loads(Path(args.audit).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{args.audit}:{e.lineno}: not JSON ({e.msg}); give the --json file of `preftune data audit`")
    if not isinstance(audit, dict):
        raise ValueError(f"{args.audit}: not an audit report (expected a JSON object)")  # noqa: TRY004 (user input)
    return audit


def _suffix(path: Path) -> str:
    if path.is_dir():
        return ""  # a `datasets` folder: write train/ and test/ folders
    sfx = path.suffixes
    return "".join(sfx[-2:]) if len(sfx) >= 2 and sfx[-1].lower() == ".gz" else path.suffix


def cmd_split(args: argparse.Namespace) -> int:
    from preftune.data.curate import prompt_key
    from preftune.data.io import write_rows
    from preftune.data.split import split_keys

    src = Path(args.input)
    if not src.exists():
        raise ValueError(f"{src}: no such file or folder")
    from preftune.data.paths import Output, check_outputs, check_writable

    sfx = _suffix(src)
    out = Path(args.output)
    train_p, test_p = out / f"train{sfx}", out / f"test{sfx}"
    check_writable(Output("-o", out, folder=True))
    check_outputs([Output("train", train_p, folder=not sfx), Output("test", test_p, folder=not sfx)],
                  [("IN", src)], force=args.force)
    rows, records, _, invalid = load_rows(args.input)
    if invalid:
        raise _invalid_error(args.input, invalid, "fix them, or drop them with `preftune data curate --drop-invalid`")
    if not records:
        raise ValueError(f"{args.input}: no rows")
    res = split_keys([prompt_key(r) for r in records], args.test_frac, args.seed)
    if not res.train_indices or not res.test_indices:
        raise ValueError(f"{args.input}: --test-frac {args.test_frac} of {len(records)} rows in "
                         f"{res.num_train_prompts + res.num_test_prompts} prompt group(s) leaves a split empty")
    write_rows([rows[i] for i in res.train_indices], train_p, overwrite=args.force)
    write_rows([rows[i] for i in res.test_indices], test_p, overwrite=args.force)
    n = len(records)
    print(f"train: {len(res.train_indices)} rows, {res.num_train_prompts} prompts "
          f"({len(res.train_indices) / n:.3f}) -> {train_p}")
    print(f"test:  {len(res.test_indices)} rows, {res.num_test_prompts} prompts ({res.test_frac:.3f}; "
          f"asked {args.test_frac}) -> {test_p}")
    return 0


def _register_audit(sub) -> None:
    p = sub.add_parser("audit", help="labeller agreement, bias and calibration; Dawid-Skene; suspected mislabels",
                       description="Audit a comparison file. Rows with the same prompt and responses are labels "
                                   "of one item: raw agreement, Cohen's kappa per annotator pair, Fleiss' kappa, "
                                   "Krippendorff's alpha (ties a third category), Dawid-Skene confusion matrices "
                                   "and item posteriors, per-annotator length/position bias and honeypot accuracy "
                                   "(rows with `gold`), with flags. A part whose columns are missing is skipped "
                                   "with a one-line reason. JSON keys: see preftune.data.audit.")
    p.add_argument("file", metavar="FILE", help="a comparison file (any supported format)")
    p.add_argument("--gold", metavar="FILE",
                   help="pair rows with known answers (honeypots): a row's `gold` "
                        "verdict, else its chosen response wins; matched by prompt and responses")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="cross-fitted mislabel scores with K folds (0 = skip: agreement and labeller statistics "
                        "only, in seconds)")
    p.add_argument("--model", metavar="ENCODER",
                   help="with --folds: add this frozen encoder's mean-pooled embeddings (e.g. minilm-l6) to the "
                        "text features of the pairwise head")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold split (default 0)")
    p.add_argument("--ties", choices=("close", "none"), default="close",
                   help="close: a row with `close: true` is a tie label (default); none: it keeps its preference")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON here")
    p.add_argument("--html", metavar="OUT", help="write an HTML page of the report here")
    p.add_argument("--top", type=int, default=10, metavar="N", help="suspicious items printed (default 10)")
    p.add_argument("--force", action="store_true", help="overwrite --json / --html if they exist")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from preftune.data.audit import audit_report, format_summary, load_audit_rows
    from preftune.data.paths import check_outputs
    from preftune.data.records import PairRecord

    outs = [(name, path) for name, path in (("--json", args.json), ("--html", args.html)) if path]
    check_outputs(outs, [("FILE", args.file)] + ([("--gold", args.gold)] if args.gold else []), force=args.force)
    if args.folds < 0 or args.folds == 1:
        raise ValueError(f"--folds must be 0 (skip) or at least 2, got {args.folds}")
    if args.model and not args.folds:
        raise ValueError("--model is used by the cross-fitted mislabel scores: give --folds K too")
    records, lines, invalid, notes = load_audit_rows(args.file)
    if invalid:
        raise _invalid_error(args.file, invalid, "fix them, or drop them with `preftune data curate --drop-invalid`")
    if not records:
        raise ValueError(f"{args.file}: no rows")
    gold: list = []
    if args.gold:
        g_records, _, g_invalid, g_notes = load_audit_rows(args.gold)
        if g_invalid:
            raise _invalid_error(args.gold, g_invalid, "the gold file must hold valid pair rows")
        gold = [r for r in g_records if isinstance(r, PairRecord)]
        notes = [*notes, *g_notes]
    report = {"input": args.file, "gold_file": args.gold,
              **audit_report(records, lines, ties=args.ties, gold=gold, notes=notes)}
    if args.folds:
        from preftune.audit.noise import add_mislabel_scores

        add_mislabel_scores(report, records, lines, folds=args.folds, model=args.model, seed=args.seed)
    print(format_summary(report, top=args.top))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report: {args.json}")
    if args.html:
        from preftune.audit.page import write_audit_page

        write_audit_page(report, Path(args.html))
        print(f"page: {args.html}")
    return 0
