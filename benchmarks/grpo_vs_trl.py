"""Online RL speed and memory: preftune's `train rl --algo grpo` against TRL 1.16's GRPOTrainer.

Same model, prompts (the world's, through the chat template), G, max new tokens, sampling (temperature
1, no top-k / top-p, stop at EOS), loss (`grpo`: per-sequence token mean), KL setting (beta 0.04 and 0,
TRL's default), reward function (benchmarks/grpo_reward.py), optimiser (AdamW, linear schedule, no
warm-up, clip 1.0), full fine-tuning, fp32, no gradient checkpointing (TRL's default turns it on; off
in both here), CPU, transformers generation for TRL and preftune's own
rollout engine, 1 torch thread each. One process per contender (peak RSS = that child's ru_maxrss);
contenders interleaved (order alternating per setup). Speed = completions trained per second over the
steady steps (step 1 is warm-up), generation included for both, per wall second and per CPU second
of the process (the machine is shared: CPU seconds are the steadier measure).

    PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/grpo_vs_trl.py --force

Writes benchmarks/results/grpo_vs_trl.{json,md}. First-step loss parity on one fixed rollout batch is not
measured here (the two draw different samples): benchmarks/grpo_loss_parity.py measures it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, TRL_PY, machine, markdown_table, ratio, run_worker, venv_versions

# name -> (model alias, prompts per step, G, max new tokens, steps)
SETUPS = {"tiny": ("tiny-llama", 4, 8, 64, 6), "smollm2": ("smollm2-135m", 2, 4, 48, 4)}


def prompts_file(work: Path, n: int) -> Path:
    from preftune.world.generate import world_prompts

    path = work / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in world_prompts(n, 0, "train")))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setups", default="tiny,smollm2")
    ap.add_argument("--betas", default="0.04,0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nice", type=int, default=5)
    ap.add_argument("--work", default="/tmp/preftune_grpo_bench")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out_md, out_json = BENCH / "results" / "grpo_vs_trl.md", BENCH / "results" / "grpo_vs_trl.json"
    if out_md.exists() and not args.force:
        sys.exit(f"{out_md} exists; pass --force to replace it")
    from preftune.models import resolve_model_path

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = prompts_file(work, 256)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results, flip = [], False
    for setup in args.setups.split(","):
        alias, P, G, M, steps = SETUPS[setup]
        for beta in (float(b) for b in args.betas.split(",")):
            spec = {"model_path": resolve_model_path(alias), "data_path": str(data), "prompts_per_step": P,
                    "num_generations": G, "max_new_tokens": M, "max_steps": steps, "lr": 1e-5, "beta": beta,
                    "loss_type": "grpo", "seed": 0, "num_threads": args.threads, "warmup": 1}
            order = [("trl", TRL_PY, "trl_grpo_worker.py"), ("preftune", sys.executable, "preftune_grpo_worker.py")]
            pair = {}
            for name, py, script in (order[::-1] if flip else order):
                s = spec | {"out_dir": str(work / f"{setup}-{beta}-{name}")}
                r = run_worker(py, script, s, work / "logs", f"{setup}-{beta}-{name}", nice=args.nice,
                               env={"OMP_NUM_THREADS": str(args.threads)})
                print(name, setup, beta, {k: r.get(k) for k in ("ok", "steady_pairs_per_s", "peak_rss_mb",
                                                                  "error_tail")}, flush=True)
                pair[name] = r
            flip = not flip
            results.append({"setup": setup, "model": alias, "P": P, "G": G, "max_new_tokens": M, "steps": steps,
                            "beta": beta, **pair})
    out_json.write_text(json.dumps({"results": results, "started": started, "machine": machine(),
                                    "versions": {"preftune": venv_versions(sys.executable),
                                                 "trl": venv_versions(TRL_PY)}}, indent=1) + "\n")
    rows = []
    for r in results:
        t, p = r["trl"], r["preftune"]
        ts, ps = t.get("steady_pairs_per_s"), p.get("steady_pairs_per_s")
        n = r["P"] * r["G"]
        tc = n / t["steady_step_cpu_s"] if t.get("steady_step_cpu_s") else None
        pc = n / p["steady_step_cpu_s"] if p.get("steady_step_cpu_s") else None
        rows.append([r["model"], f"{r['P']}x{r['G']}", r["max_new_tokens"], r["beta"],
                     f"{ts:.2f}" if ts else "failed", f"{ps:.2f}" if ps else "failed", f"{ratio(ps, ts) or 0:.2f}x",
                     f"{tc:.2f}" if tc else "-", f"{pc:.2f}" if pc else "-", f"{ratio(pc, tc) or 0:.2f}x",
                     f"{t['peak_rss_mb']:,.0f}", f"{p['peak_rss_mb']:,.0f}",
                     f"{ratio(p['peak_rss_mb'], t['peak_rss_mb']) or 0:.2f}x",
                     f"{(t.get('mean_lengths') or [0])[0] or 0:.1f} / {(p.get('mean_lengths') or [0])[0] or 0:.1f}"])
    out_md.write_text(f"""# Online RL: preftune GRPO vs TRL 1.16 GRPOTrainer

Run {started} on {machine()}; the machine is shared (load before/after each run in the json).

- preftune venv: `{json.dumps(venv_versions(sys.executable))}`
- TRL venv: `{json.dumps(venv_versions(TRL_PY))}`
- command: `PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/grpo_vs_trl.py {' '.join(sys.argv[1:])}`

{__doc__.split(chr(10) + chr(10))[1]}

{markdown_table(['model', 'prompts x G', 'max new', 'KL beta', 'TRL completions/s', 'preftune completions/s',
                 'speed ratio (target >= 2x)', 'TRL completions/CPU-s',
                 'preftune completions/CPU-s', 'CPU-s ratio', 'TRL peak RSS MB', 'preftune peak RSS MB',
                 'RSS ratio (target <= 0.7x)',
                 'mean completion tokens, step 1 (TRL / preftune)'], rows)}
""")
    print(out_md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
