"""`preftune eval policy` and `preftune eval regress` (thin: the work is in policy.py / regress.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _default_json(args: argparse.Namespace, name: str) -> None:
    """No --json and MODEL is a run folder: write RUN/eval/NAME.json, which `preftune report` reads.
    That file is the run's own output, so it is rewritten on each evaluation (like metrics.jsonl)."""
    if args.json is None and (Path(args.model) / "final").is_dir():
        args.json = str(Path(args.model) / "eval" / f"{name}.json")
        args.force = True


def _check_json(args: argparse.Namespace, *inputs: tuple[str, str | None]) -> None:
    """Before any work: the --json file is not the input, exists only with --force, and can be written
    (a read-only folder found after all the generation would lose it)."""
    if args.json:
        from preftune.data.paths import check_outputs

        check_outputs([("--json", args.json)], list(inputs), force=args.force)


def http_judge_options(args: argparse.Namespace) -> dict:
    return {"timeout": args.judge_timeout, "retries": args.judge_retries, "deadline": args.judge_deadline,
            "max_bytes": args.judge_max_bytes}


def add_http_judge_flags(p) -> None:
    g = p.add_argument_group("http: judge limits")
    g.add_argument("--judge-timeout", type=float, default=60.0,
                   help="seconds one judge request may take, the whole answer included (default 60)")
    g.add_argument("--judge-retries", type=int, default=3,
                   help="retries of a request that got HTTP 5xx/429, a reset connection or a timeout, with "
                   "exponential backoff from 1 s (default 3)")
    g.add_argument("--judge-deadline", type=float, default=None,
                   help="seconds the whole judging step may take (default: no limit)")
    g.add_argument("--judge-max-bytes", type=int, default=1_000_000,
                   help="largest judge answer read, in bytes (default 1,000,000)")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def run_policy(args: argparse.Namespace) -> int:
    from preftune.eval.judges import make_judge, parse_judge_spec
    from preftune.eval.policy import evaluate_policy, read_prompt_info, read_prompts

    parse_judge_spec(args.judge)  # a bad judge fails before any model loads
    if parse_judge_spec(args.judge)[0].value == "http":  # bad limits fail before any model loads too
        make_judge(args.judge, **http_judge_options(args))
    _default_json(args, "policy")
    _positive("--max-new-tokens", args.max_new_tokens)
    _positive("--num-prompts", args.num_prompts)
    _positive("--batch-size", args.batch_size)
    if args.tax_samples < 0 or args.tax_samples == 1:
        raise ValueError(
            f"--tax-samples must be 0 (off) or at least 2 (diversity compares samples), got {args.tax_samples}")
    _check_json(args, ("--prompts", args.prompts), ("--generated", args.generated))
    if args.agent:
        return _run_agent(args)
    prompts = read_prompts(args.prompts, args.num_prompts)
    judge = make_judge(args.judge, judge_model=args.judge_model, key_env=args.judge_key_env,
                       **http_judge_options(args))
    r = evaluate_policy(args.model, args.baseline, prompts, judge, max_new_tokens=args.max_new_tokens,
                        batch_size=args.batch_size, seed=args.seed, out=args.json, overwrite=args.force,
                        prompt_info=read_prompt_info(args.prompts, args.num_prompts), generated=args.generated,
                        tax_samples=args.tax_samples)
    lo, hi = r["win_rate_ci95"]
    print(f"{r['model']} vs {r['baseline']} under {r['judge']} on {r['num_prompts']} prompts")
    print(f"  wins {r['wins']}  ties {r['ties']}  losses {r['losses']}")
    print(f"  win rate {r['win_rate']:.3f}  (95% CI {lo:.3f}-{hi:.3f})  "
          f"length-controlled {r['lc_win_rate']:.3f}")
    print(f"  mean length (chars) model {r['mean_length_model']:.1f}  "
          f"baseline {r['mean_length_baseline']:.1f}")
    if r["kl_k1"] is not None:
        print(f"  KL(model || baseline) k1 {r['kl_k1']:.4f}  k3 {r['kl_k3']:.4f}")
    if r["position_bias_rate"] is not None:
        print(f"  position-bias rate {r['position_bias_rate']:.3f}")
    if "mean_score_model" in r:
        print(f"  mean judge score model {r['mean_score_model']:.4f}  "
              f"baseline {r['mean_score_baseline']:.4f}")
    if "tax" in r:
        d = r["tax"]["delta"]
        print("  alignment tax (model - baseline): "
              + "  ".join(f"{k} {v:+.4f}" for k, v in d.items() if v is not None))
    warnings = [*r["length_bias"]["warnings"], *r.get("reward_length_bias", {}).get("warnings", []),
                *r.get("uncertain_responses", {}).get("warnings", [])]
    for w in warnings:
        print(f"  WARNING: {w}")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def run_regress(args: argparse.Namespace, generators=None) -> int:
    """`generators` = (model_fn, baseline_fn) replaces model loading (tests); the gate code is the same."""
    from preftune.eval.policy import write_json
    from preftune.eval.regress import DEFAULT_SUITE, greedy_generator, read_suite, regression_gate

    _positive("--max-new-tokens", args.max_new_tokens)
    _default_json(args, "regress")
    suite = args.suite or DEFAULT_SUITE
    _check_json(args, ("--suite", suite))
    cases = read_suite(suite)
    if generators is None:
        gen_model = greedy_generator(args.model, args.max_new_tokens, args.batch_size)
        gen_base = gen_model if args.baseline == args.model else greedy_generator(
            args.baseline, args.max_new_tokens, args.batch_size)
    else:
        gen_model, gen_base = generators
    r = regression_gate(cases, gen_model, gen_base)
    r = {"model": str(args.model), "baseline": str(args.baseline), "suite": str(suite),
         "max_new_tokens": args.max_new_tokens, **r}
    print(f"{r['num_cases']} cases: model passes {r['model_passed']}, "
          f"baseline passes {r['baseline_passed']}, "
          f"{r['num_regressions']} regression(s), {len(r['fixed'])} fixed")
    for reg in r["regressions"]:
        print(f"  REGRESSION {reg['id']}: {'; '.join(reg['failed_checks'])}")
    if args.json:
        write_json(r, args.json, overwrite=args.force)
        print(f"wrote {args.json}")
    return 1 if args.fail_on_regression and r["regressions"] else 0


def _run_agent(args: argparse.Namespace) -> int:
    """`eval policy --agent`: roll both models out on the tool-use world's tasks (eval/agent.py)."""
    from preftune.eval.agent import AGENT_METRICS, evaluate_agent, hf_policy, read_tasks
    from preftune.eval.generate import load_causal_lm
    from preftune.eval.policy import write_json

    tasks = read_tasks(args.prompts)[:args.num_prompts]
    model = load_causal_lm(args.model)
    base = model if args.baseline == args.model else load_causal_lm(args.baseline)
    r = evaluate_agent(hf_policy(*model, max_new_tokens=args.max_new_tokens),
                       hf_policy(*base, max_new_tokens=args.max_new_tokens), tasks, seed=args.seed, progress=True)
    r.update(model_name=args.model, baseline_name=args.baseline)
    print(f"{args.model} vs {args.baseline} on {r['num_tasks']} tool-use tasks (model / baseline / delta, 95% CI)")
    for k in AGENT_METRICS:
        m, b, d = r["model"][k], r["baseline"][k], r["delta"][k]
        if m is not None and b is not None:
            lo, hi = r["delta"][f"{k}_ci95"]
            print(f"  {k:22s} {m:.3f} / {b:.3f} / {d:+.3f} ({lo:+.3f}, {hi:+.3f})")
    if args.json:
        write_json(r, args.json, overwrite=args.force)
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("policy", help="judge a policy against a baseline: win rate, LC win rate, KL",
                       description="Generate from MODEL and --baseline on the prompts (seeded sampling), "
                                   "judge each pair, report win/tie/loss, win rate with a bootstrap 95% "
                                   "interval, length-controlled win rate, lengths, and "
                                   "KL(model || baseline).")
    p.add_argument("model", help="model alias, folder, run folder (uses RUN/final) or LoRA adapter folder")
    p.add_argument("--prompts", required=True, help="row file whose rows have a `prompt`")
    p.add_argument("--baseline", required=True, help="the model to compare against (same forms as MODEL)")
    p.add_argument("--judge", default="gold", help="gold | rm:RUN | llm:MODEL | http:URL (default gold)")
    p.add_argument("--judge-model", default="default", help="model name sent to an http: judge")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the http: judge's API key (default OPENAI_API_KEY)")
    add_http_judge_flags(p)
    p.add_argument("--json", default=None, help="write the report (with every sample) to this JSON file "
                   "(default for a run folder: RUN/eval/policy.json)")
    p.add_argument("--generated", default=None,
                   help="judge the samples kept in JSON.generated.json by a run whose judging failed "
                   "(same model, baseline, prompts, seed and max new tokens) instead of generating")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--num-prompts", type=int, default=None, help="use only the first K prompts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite the --json file")
    p.add_argument("--agent", action="store_true", help="tool-use rollouts instead: --prompts is a tasks_test.jsonl "
                   "of `data world --agent`; reports task success, tool-selection and argument accuracy, invalid "
                   "and unnecessary call rates, turns (model vs baseline, bootstrap intervals); --judge is not used")
    p.add_argument("--tax-samples", type=int, default=0, help="also measure the alignment tax (diversity over N "
                   "samples of the first 8 prompts, arithmetic accuracy, reference perplexity), model vs baseline; "
                   "0 = off")
    p.set_defaults(func=run_policy)

    r = sub.add_parser("regress", help="regression gate: cases the baseline passes and MODEL fails",
                       description="Answer every case of a regression suite greedily with MODEL and "
                                   "--baseline; list each case that passed for the baseline and fails for "
                                   "MODEL. With --fail-on-regression, exit 1 when there is one (a CI gate).")
    r.add_argument("model", help="model alias, folder, run folder (uses RUN/final) or LoRA adapter folder")
    r.add_argument("--suite", default=None,
                   help="suite JSONL (default: the built-in suite of the world's checkable instructions)")
    r.add_argument("--baseline", required=True, help="the model that must not be regressed from")
    r.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any case regressed")
    r.add_argument("--json", default=None,
                   help="write the full report to this JSON file "
                   "(default for a run folder: RUN/eval/regress.json)")
    r.add_argument("--max-new-tokens", type=int, default=128)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--force", action="store_true", help="overwrite the --json file")
    r.set_defaults(func=run_regress)

