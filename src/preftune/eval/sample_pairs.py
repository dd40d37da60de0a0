"""`preftune sample-pairs`: on-policy preference pairs, the RLAIF loop with a known judge.

For each prompt, sample N responses from the model, score each with a scorer (`gold`, the world's
exact scorer, or `rm:RUN`, a trained reward model), and keep the best and the worst as chosen /
rejected when their scores differ by more than `--min-margin`. Pairs drawn from the model's own
distribution are what DPO learns from best (Tajwar et al. 2024, "Preference fine-tuning of LLMs
should leverage suboptimal, on-policy data"). Prompts whose samples all score alike give no pair;
they are counted and listed in the summary, never dropped silently.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path


def sample_pairs(model, tokenizer, prompts: Sequence, scorer, *, num_samples: int = 4, max_new_tokens: int = 64,
                 temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 16, seed: int = 0,
                 min_margin: float = 0.0, source: str = "sample-pairs") -> tuple[list[dict], dict]:
    """Returns (pair rows, summary). Each row carries the margin (score difference), the scorer as
    annotator, and all N scores in `sample_scores` so that the data can be audited later."""
    import numpy as np

    from preftune.eval.generate import generate

    if num_samples < 2:
        raise ValueError(f"--num-samples must be >= 2 to form a pair, got {num_samples}")
    # sample i of every prompt in one pass (seed + i), so each pass is a batch of distinct prompts
    texts = [generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size,
                      temperature=temperature, top_p=top_p, seed=seed + 1000 * i,
                      desc=f"sample {i + 1}/{num_samples}").texts for i in range(num_samples)]
    flat_prompts = [p for _ in range(num_samples) for p in prompts]
    flat_texts = [t for sample in texts for t in sample]
    scores = np.asarray(scorer.score(flat_prompts, flat_texts), dtype=float).reshape(num_samples, len(prompts))
    rows, no_pair = [], []
    for j, prompt in enumerate(prompts):
        s = scores[:, j]
        best, worst = int(np.argmax(s)), int(np.argmin(s))
        margin = float(s[best] - s[worst])
        if margin <= min_margin or texts[best][j] == texts[worst][j]:
            no_pair.append(j)
            continue
        rows.append({"id": f"{source}-{j}", "prompt": prompt, "chosen": texts[best][j], "rejected": texts[worst][j],
                     "margin": round(margin, 6), "annotator": getattr(scorer, "name", "scorer"), "source": source,
                     "close": margin < 0.1, "sample_scores": [round(float(x), 6) for x in s]})
    summary = {"num_prompts": len(prompts), "num_pairs": len(rows), "num_no_pair": len(no_pair),
               "no_pair_prompt_indices": no_pair, "num_samples": num_samples,
               "mean_score": float(scores.mean()), "mean_best": float(scores.max(0).mean()),
               "mean_margin": float(np.mean([r["margin"] for r in rows])) if rows else 0.0}
    return rows, summary


def run_sample_pairs(args: argparse.Namespace) -> int:
    from preftune.data.io import write_rows
    from preftune.data.paths import check_outputs, rows_output
    from preftune.eval.generate import load_causal_lm
    from preftune.eval.judges import make_scorer
    from preftune.eval.policy import read_prompts

    out = Path(args.out)
    summary_out = out.with_name(out.name + ".summary.json")
    check_outputs([rows_output("-o", out), ("-o's summary", summary_out)], [("--prompts", args.prompts)],
                  force=args.force)
    prompts = read_prompts(args.prompts, args.num_prompts)
    scorer = make_scorer(args.scorer)
    model, tok = load_causal_lm(args.model)
    rows, summary = sample_pairs(model, tok, prompts, scorer, num_samples=args.num_samples,
                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 batch_size=args.batch_size, seed=args.seed, min_margin=args.min_margin,
                                 source=f"sample-pairs:{args.model}")
    if not rows:
        raise ValueError(f"no prompt gave two samples that score differently (of {len(prompts)} prompts); "
                         "try more --num-samples or a higher --temperature")
    write_rows(rows, out, overwrite=args.force)
    # where the pairs came from, for the provenance of every run trained on them (preftune report)
    summary = {"command": "sample-pairs", "model": str(args.model), "scorer": args.scorer,
               "prompts": str(args.prompts), "temperature": args.temperature,
               "max_new_tokens": args.max_new_tokens, "seed": args.seed, "min_margin": args.min_margin, **summary}
    summary_path = out.with_name(out.name + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(rows)} pairs from {len(prompts)} prompts to {out} "
          f"({summary['num_no_pair']} prompts gave no pair: all samples scored alike); "
          f"mean score {summary['mean_score']:.3f}, mean best-of-{args.num_samples} {summary['mean_best']:.3f}; "
          f"summary in {summary_path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sample-pairs", help="make on-policy pairs: sample N responses per prompt, rank them "
                                            "with a scorer, keep best vs worst", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model alias, folder, run folder or LoRA adapter folder")
    p.add_argument("--prompts", required=True, help="file of rows with a `prompt` (string or messages)")
    p.add_argument("--scorer", default="gold", help="gold (the world's exact scorer) or rm:RUN")
    p.add_argument("-o", "--out", required=True, help="output pairs file (.jsonl, .json, .csv, .parquet)")
    p.add_argument("--num-samples", type=int, default=4, help="samples per prompt (default 4)")
    p.add_argument("--num-prompts", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-margin", type=float, default=0.0, help="keep a pair only if best - worst > this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_sample_pairs)
