"""Best-of-N sampling: draw N responses per prompt, keep the one a proxy scorer likes best.

`preftune bon MODEL --prompts FILE --scorer rm:RUN --n 1,2,4,8 -o bon.json` reports, for each N, the
mean proxy score and the mean held-out judge score of the kept responses, and the analytic bound
KL(best-of-N || model) <= log N - (N-1)/N, so the reward-vs-KL curve of best-of-N can be laid next
to a trained policy's (Gao et al. 2023 use exactly this curve to expose over-optimisation).
P = prompts, N = samples per prompt.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from preftune.eval import guards, metrics


def parse_ns(text: str) -> list[int]:
    """"1,2,4,8" -> [1, 2, 4, 8] (sorted, unique, each >= 1)."""
    try:
        ns = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--n: expected comma-separated integers like 1,2,4,8, got {text!r}") from None
    if not ns or ns[0] < 1:
        raise ValueError(f"--n: every N must be >= 1, got {text!r}")
    return ns


def subset_max_weights(k: int, n: int) -> np.ndarray:
    """(k,) probability that the sample of ascending rank i is the best of a uniformly random n-subset
    of k samples: C(i, n - 1) / C(k, n). Averaging a judge with these weights gives the expected judge
    score of best-of-n over every subset of the k draws (the unbiased best-of-n estimator of Nakano et
    al. 2021, appendix, used by Gao et al. 2023), far less noisy than one subset per prompt."""
    from math import comb

    if not 1 <= n <= k:
        raise ValueError(f"n={n} outside 1..{k} samples per prompt")
    return np.array([comb(i, n - 1) for i in range(k)], dtype=np.float64) / comb(k, n)


ESTIMATORS = ("all_subsets", "nested")


def bon_curve(proxy: np.ndarray, judge: np.ndarray, ns: Sequence[int], estimator: str = "all_subsets",
              seed: int = 0) -> list[dict]:
    """proxy, judge (P, K) scores of the same samples -> one row per n in `ns`.

    all_subsets (default): the expected best-of-n scores over all n-subsets of each prompt's K samples
    (rank weights from subset_max_weights; proxy ties broken by sample order). nested: best of the
    first n samples of each prompt. Either way the n's share their samples, so the curve moves only
    because n grows. Each row also has the judge's 95% bootstrap interval over prompts and the paired
    gain over the smallest n with its interval.
    """
    proxy, judge = np.asarray(proxy, dtype=np.float64), np.asarray(judge, dtype=np.float64)
    if proxy.shape != judge.shape or proxy.ndim != 2:
        raise ValueError(f"proxy {proxy.shape} and judge {judge.shape} must be the same (P, N) shape")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    P, K = proxy.shape
    rows_idx = np.arange(P)
    order = np.argsort(proxy, axis=1, kind="stable")  # ascending; equal proxies keep sample order
    sorted_proxy, sorted_judge = proxy[rows_idx[:, None], order], judge[rows_idx[:, None], order]
    per_prompt, rows = [], []
    for n in ns:
        if not 1 <= n <= K:
            raise ValueError(f"n={n} outside 1..{K} samples per prompt")
        if estimator == "nested":
            pick = proxy[:, :n].argmax(axis=1)  # (P,) first best on ties
            p_n, j_n = proxy[rows_idx, pick], judge[rows_idx, pick]
        else:
            w = subset_max_weights(K, n)
            p_n, j_n = sorted_proxy @ w, sorted_judge @ w
        per_prompt.append(j_n)
        gain = j_n - per_prompt[0]
        rows.append({"n": int(n), "proxy": float(p_n.mean()), "judge": float(j_n.mean()),
                     "judge_ci95": list(metrics.bootstrap_ci(j_n, seed=seed)),
                     "judge_gain": float(gain.mean()), "judge_gain_ci95": list(metrics.bootstrap_ci(gain, seed=seed)),
                     "kl_bound": metrics.best_of_n_kl_bound(n)})
    return rows


def best_of_n(model, prompts: Sequence, scorer, judge, ns: Sequence[int], *, max_new_tokens: int = 64,
              batch_size: int = 8, seed: int = 0, progress: bool = True, num_samples: int | None = None,
              estimator: str = "all_subsets", sample_fn: Callable[[list], list[str]] | None = None) -> dict:
    """Generate K = num_samples (default max(ns)) samples per prompt once, score them with `scorer`
    (proxy) and `judge` (held out), and report the best-of-n curve with the over-optimisation guard along n.

    `sample_fn` (prompts -> one sampled text each) replaces sampling from `model`, e.g. to draw from a
    fixed pool of candidates in tests; everything after the sampling is the same code.
    """
    n_max = max(ns) if num_samples is None else num_samples
    if n_max < max(ns):
        raise ValueError(f"num_samples={n_max} is smaller than the largest N ({max(ns)})")
    flat_prompts = [p for p in prompts for _ in range(n_max)]  # (P * N,) prompt-major
    if sample_fn is None:
        from preftune.eval.generate import generate
        from preftune.eval.policy import _load

        pol, tok = _load(model)
        texts = generate(pol, tok, flat_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         seed=seed, progress=progress, desc="best-of-n samples").texts
    else:
        texts = list(sample_fn(flat_prompts))
    shape = (len(prompts), n_max)
    proxy = np.asarray(scorer.score(flat_prompts, texts), dtype=np.float64).reshape(shape)
    held = proxy if judge is scorer else \
        np.asarray(judge.score(flat_prompts, texts), dtype=np.float64).reshape(shape)
    curve = bon_curve(proxy, held, ns, estimator=estimator, seed=seed)
    over = guards.overoptimisation_report([r["n"] for r in curve], [r["proxy"] for r in curve],
                                          [r["judge"] for r in curve], x_name="N")
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    return {"model": str(model) if sample_fn is None else "sample_fn", "scorer": scorer.name,
            "judge": judge.name, "num_prompts": len(prompts),
            "ns": list(ns), "num_samples": n_max, "estimator": estimator, "seed": seed,
            "max_new_tokens": max_new_tokens, "curve": curve,
            "overoptimisation": over,
            "length_bias": guards.length_bias_report(lengths, rewards=proxy.reshape(-1)),
            "warnings": over["warnings"]}


def run_bon(args: argparse.Namespace) -> int:
    from preftune.eval.judges import make_scorer
    from preftune.eval.policy import read_prompts, write_json

    ns = parse_ns(args.n)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.num_samples is not None and args.num_samples < max(ns):
        raise ValueError(f"--num-samples {args.num_samples} is smaller than the largest N ({max(ns)})")
    run = Path(args.model) if (Path(args.model) / "final").is_dir() else None
    if args.out is None:
        if run is None:
            raise ValueError("-o/--out is required unless MODEL is a run folder (then RUN/eval/bon.json)")
        args.out, args.force = str(run / "eval" / "bon.json"), True  # the run's own output, rewritten
    from preftune.data.paths import check_outputs

    # before the sampling, not after: exists without --force, is the input, cannot be written
    outs = [("-o", args.out)] + ([("RUN/eval/guards.json", run / "eval" / "guards.json")] if run else [])
    check_outputs(outs[:1], [("--prompts", args.prompts)], force=args.force)
    if run is not None:
        check_outputs(outs[1:], force=True)
    prompts = read_prompts(args.prompts, args.num_prompts)
    scorer = make_scorer(args.scorer)
    judge = scorer if args.judge == args.scorer else make_scorer(args.judge)
    report = best_of_n(args.model, prompts, scorer, judge, ns, max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, seed=args.seed, num_samples=args.num_samples,
                       estimator=args.estimator)
    write_json(report, args.out, overwrite=args.force)
    if run is not None:  # the guards' view of this run, which `preftune report` plots and highlights
        write_json({"best_of_n": report["overoptimisation"], "length_bias": report["length_bias"]},
                   run / "eval" / "guards.json", overwrite=True)
    for r in report["curve"]:
        lo, hi = r["judge_gain_ci95"]
        print(f"N={r['n']:<4d} proxy={r['proxy']:.4f} judge={r['judge']:.4f} "
              f"(gain over N={ns[0]}: {r['judge_gain']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]) KL<={r['kl_bound']:.3f}")
    for w in report["warnings"]:
        print(f"WARNING: {w}")
    print(f"wrote {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bon", help="best-of-N sampling under a reward model: proxy and judge score vs N",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model alias, folder, run folder or LoRA adapter folder")
    p.add_argument("--prompts", required=True, help="row file whose rows have a `prompt`")
    p.add_argument("--scorer", required=True, help="proxy that picks the best sample: rm:RUN or gold")
    p.add_argument("--judge", default="gold",
                   help="held-out scorer of the kept samples: gold or rm:RUN (default gold)")
    p.add_argument("--n", default="1,2,4,8", help="comma-separated N values (default 1,2,4,8)")
    p.add_argument("-o", "--out", default=None,
                   help="output JSON file (default for a run folder: RUN/eval/bon.json; a run folder also "
                   "gets RUN/eval/guards.json)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-prompts", type=int, default=None, help="use only the first K prompts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-samples", type=int, default=None,
                   help="samples drawn per prompt, K >= max N (default max N); more samples make every N's "
                   "estimate less noisy")
    p.add_argument("--estimator", choices=ESTIMATORS, default="all_subsets",
                   help="all_subsets (default): expected best-of-N over every N-subset of the K samples; "
                   "nested: best of the first N samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.set_defaults(func=run_bon)
