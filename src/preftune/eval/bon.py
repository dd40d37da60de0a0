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


def bon_curve(proxy: np.ndarray, judge: np.ndarray, ns: Sequence[int]) -> list[dict]:
    """proxy, judge (P, N_max) scores of the same samples -> one row per n in `ns`.

    Best-of-n uses the first n samples of each prompt, so the n's are nested: the curve then moves only
    because n grows, not because a fresh draw was luckier (less noise than independent draws).
    """
    proxy, judge = np.asarray(proxy, dtype=np.float64), np.asarray(judge, dtype=np.float64)
    if proxy.shape != judge.shape or proxy.ndim != 2:
        raise ValueError(f"proxy {proxy.shape} and judge {judge.shape} must be the same (P, N) shape")
    rows = []
    for n in ns:
        if not 1 <= n <= proxy.shape[1]:
            raise ValueError(f"n={n} outside 1..{proxy.shape[1]} samples per prompt")
        pick = proxy[:, :n].argmax(axis=1)  # (P,) first best on ties
        rows_idx = np.arange(proxy.shape[0])
        rows.append({"n": int(n), "proxy": float(proxy[rows_idx, pick].mean()),
                     "judge": float(judge[rows_idx, pick].mean()), "kl_bound": metrics.best_of_n_kl_bound(n)})
    return rows


def best_of_n(model, prompts: Sequence, scorer, judge, ns: Sequence[int], *, max_new_tokens: int = 64,
              batch_size: int = 8, seed: int = 0, progress: bool = True,
              sample_fn: Callable[[list], list[str]] | None = None) -> dict:
    """Generate max(ns) samples per prompt once, score them with `scorer` (proxy) and `judge` (held out),
    and report the best-of-n curve with the over-optimisation guard along n.

    `sample_fn` (prompts -> one sampled text each) replaces sampling from `model`, e.g. to draw from a
    fixed pool of candidates in tests; everything after the sampling is the same code.
    """
    n_max = max(ns)
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
    curve = bon_curve(proxy, held, ns)
    over = guards.overoptimisation_report([r["n"] for r in curve], [r["proxy"] for r in curve],
                                          [r["judge"] for r in curve], x_name="N")
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    return {"model": str(model) if sample_fn is None else "sample_fn", "scorer": scorer.name,
            "judge": judge.name, "num_prompts": len(prompts),
            "ns": list(ns), "seed": seed, "max_new_tokens": max_new_tokens, "curve": curve,
            "overoptimisation": over,
            "length_bias": guards.length_bias_report(lengths, rewards=proxy.reshape(-1)),
            "warnings": over["warnings"]}


def run_bon(args: argparse.Namespace) -> int:
    from preftune.eval.judges import make_scorer
    from preftune.eval.policy import read_prompts, write_json

    ns = parse_ns(args.n)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    run = Path(args.model) if (Path(args.model) / "final").is_dir() else None
    if args.out is None:
        if run is None:
            raise ValueError("-o/--out is required unless MODEL is a run folder (then RUN/eval/bon.json)")
        args.out, args.force = str(run / "eval" / "bon.json"), True  # the run's own output, rewritten
    if Path(args.out).exists() and not args.force:  # before the sampling, not after
        raise ValueError(f"{args.out} exists; pass --force to overwrite it")
    prompts = read_prompts(args.prompts, args.num_prompts)
    scorer = make_scorer(args.scorer)
    judge = scorer if args.judge == args.scorer else make_scorer(args.judge)
    report = best_of_n(args.model, prompts, scorer, judge, ns, max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, seed=args.seed)
    write_json(report, args.out, overwrite=args.force)
    if run is not None:  # the guards' view of this run, which `preftune report` plots and highlights
        write_json({"best_of_n": report["overoptimisation"], "length_bias": report["length_bias"]},
                   run / "eval" / "guards.json", overwrite=True)
    for r in report["curve"]:
        print(f"N={r['n']:<4d} proxy={r['proxy']:.4f} judge={r['judge']:.4f} KL<={r['kl_bound']:.3f}")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.set_defaults(func=run_bon)
