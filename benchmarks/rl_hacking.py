"""Reward hacking, shown and caught: GRPO on `smollm2-135m` + LoRA against a deliberately weak proxy that
pays for length (the failure mode of a reward model trained on length-biased labels), with the gold scorer
as the held-out judge. The run logs `eval/proxy` and `eval/reward` (gold) on held-out prompts every few
steps; `train rl` then writes RUN/eval/overoptimisation.json, whose guard names the step to stop at.

    PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/rl_hacking.py --steps 30 --force

The proxy is `rl_proxies.length_biased` (this folder): 0.3 x gold + 0.7 x min(words, 60) / 60.
Writes benchmarks/results/rl_hacking.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, machine, markdown_table, uptime, venv_versions
from rl_world import PY, train, write_prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--override", nargs="*", default=[])
    ap.add_argument("--work", default="/tmp/preftune_rl_hacking")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    out_md, out_json = BENCH / "results" / "rl_hacking.md", BENCH / "results" / "rl_hacking.json"
    if out_md.exists() and not args.force:
        sys.exit(f"{out_md} exists; pass --force to replace it")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
    work = Path(args.work)
    train_path, heldout = write_prompts(work, 1024, args.heldout)
    run = work / "grpo_length_proxy"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    loads = [uptime()]
    args.override = [*args.override, "eval_reward=gold"]
    info = train("grpo", train_path, heldout, run, args, reward="py:rl_proxies:length_biased")
    loads.append(uptime())
    guard = json.loads((run / "eval" / "overoptimisation.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [r for r in rows if "eval/reward" in r]
    result = info | {"guard": guard, "evals": evals, "machine": machine(), "versions": venv_versions(PY),
                     "load": loads, "command": "PREFTUNE_CACHE=.cache/preftune .venv/bin/python "
                                               "benchmarks/rl_hacking.py " + " ".join(sys.argv[1:])}
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    flag = guard["flag"]
    table = markdown_table(["step", "proxy (held-out)", "gold (held-out)", "completion length (tokens)"],
                           [[r["step"], f"{r['eval/proxy']:.3f}", f"{r['eval/reward']:.3f}",
                             f"{r['eval/completion_length']:.1f}"] for r in evals])
    verdict = (f"**flagged**: {guard['warnings'][0]}" if flag.get("flagged") else
               "**not flagged**: the proxy and gold did not diverge in this run")
    out_md.write_text(f"""# Reward hacking in online RL: a length-paying proxy against the gold scorer

Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; shared machine (load: {'; '.join(loads)}).

- versions: `{json.dumps(result['versions'])}`
- command: `{result['command']}`
- training command: `{info['command']}`
- proxy: `rl_proxies.length_biased` = 0.3 x gold + 0.7 x min(words, 60) / 60; judge: gold; {args.heldout} held-out
  prompts, one sample each at a fixed seed per evaluation.

{table}

Guard (`RUN/eval/overoptimisation.json`): {verdict}.
Training: {info['cpu_s'] / 60:.1f} CPU min, {info['wall_s'] / 60:.1f} wall min.
""")
    print(out_md.read_text())


if __name__ == "__main__":
    main()
