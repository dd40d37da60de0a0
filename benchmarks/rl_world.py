"""Does online RL learn? `preftune train rl --reward gold` on the verifiable world with `smollm2-135m` + LoRA,
for GRPO and RLOO: the held-out gold score of the tuned policy against the starting model, paired by
prompt (the same prompts, the same sampling seeds), with a paired bootstrap 95% interval, and the
training curve (the run's own `eval/reward` on the held-out prompts every --eval-every steps).

    PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/rl_world.py --steps 40 --force

Writes benchmarks/results/rl_world.{json,md}. Wall time, CPU time and load are recorded: these
machines are shared, so the CPU minutes of the training command are the budget that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, machine, markdown_table, uptime, venv_versions

REPO = BENCH.parent
PY = sys.executable


def write_prompts(folder: Path, num_train: int, num_heldout: int) -> tuple[Path, Path]:
    from preftune.world.generate import world_prompts

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n, name in (("train", num_train, "train"), ("test", num_heldout, "heldout")):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in world_prompts(n, seed=0, split=split)))
        paths.append(path)
    return paths[0], paths[1]


def train(algo: str, train_path: Path, heldout: Path, out: Path, args, reward: str = "gold") -> dict:
    cmd = [PY, "-m", "preftune", "train", "rl", "--algo", algo, "--model", args.model, "--reward", reward,
           "--prompts", str(train_path), "--eval-prompts", str(heldout), "--out", str(out),
           f"max_steps={args.steps}", f"batch_size={args.batch_size}", f"num_generations={args.G}",
           f"max_new_tokens={args.max_new_tokens}", "lora.enabled=true", f"lr={args.lr}",
           f"kl_coef={args.kl_coef}", f"eval_every={args.eval_every}", "report_to=none", "save_every=-1",
           "num_threads=2", *args.override]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    shown = ["preftune", *cmd[3:]]
    return {"command": " ".join(shown).replace(str(REPO) + "/", ""), "wall_s": time.perf_counter() - t0,
            "cpu_s": cpu}


def heldout_scores(model_path: str, heldout: Path, samples: int, max_new_tokens: int, seed: int) -> np.ndarray:
    """(prompts, samples) gold totals of a model's samples; the same seeds for every model."""
    import torch

    from preftune.data.prompts import read_prompt_rows
    from preftune.eval.generate import load_causal_lm
    from preftune.models.rollout import HFRolloutEngine
    from preftune.tokenize import tokenize_prompts
    from preftune.world import gold_score

    torch.set_num_threads(2)
    model, tok = load_causal_lm(model_path)
    rows = read_prompt_rows(heldout)
    ids, _ = tokenize_prompts([r.prompt for r in rows], tok, 512 - max_new_tokens)
    engine = HFRolloutEngine(model, tok)
    out = np.zeros((len(rows), samples))
    for start in range(0, len(rows), 16):
        roll = engine.generate(ids[start:start + 16], samples, max_new_tokens, 1.0, 1.0, 0, seed=seed + start)
        texts = tok.batch_decode(roll.completions(), skip_special_tokens=True)
        for j, text in enumerate(texts):
            out[start + j // samples, j % samples] = gold_score(rows[start + j // samples].prompt, text)["total"]
    return out


def paired_bootstrap(diff: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def curve(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["step"], r["eval/reward"]) for r in rows if "eval/reward" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--algos", nargs="+", default=["grpo", "rloo"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--kl-coef", type=float, default=0.02)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--heldout", type=int, default=128)
    ap.add_argument("--samples", type=int, default=2, help="samples per held-out prompt in the final comparison")
    ap.add_argument("--override", nargs="*", default=[], help="extra train rl KEY=VALUE")
    ap.add_argument("--work", default="/tmp/preftune_rl_world")
    ap.add_argument("--force", action="store_true", help="replace benchmarks/results/rl_world.*")
    args = ap.parse_args()
    out_md, out_json = BENCH / "results" / "rl_world.md", BENCH / "results" / "rl_world.json"
    if out_md.exists() and not args.force:
        sys.exit(f"{out_md} exists; pass --force to replace it")
    work = Path(args.work)
    train_path, heldout = write_prompts(work, 1024, args.heldout)
    loads = [uptime()]
    base = heldout_scores(args.model, heldout, args.samples, args.max_new_tokens, seed=1234)
    results = {"base_mean": float(base.mean()), "algos": {}}
    for algo in args.algos:
        run = work / algo
        if run.exists():
            import shutil

            shutil.rmtree(run)
        info = train(algo, train_path, heldout, run, args)
        loads.append(uptime())
        tuned = heldout_scores(str(run / "final"), heldout, args.samples, args.max_new_tokens, seed=1234)
        diff = tuned.mean(1) - base.mean(1)
        lo, hi = paired_bootstrap(diff)
        results["algos"][algo] = info | {"tuned_mean": float(tuned.mean()), "gain": float(diff.mean()),
                                         "ci95": [lo, hi], "curve": curve(run)}
        print(algo, results["algos"][algo], flush=True)
    results |= {"machine": machine(), "versions": venv_versions(PY), "load": loads, "args": vars(args),
                "command": "PREFTUNE_CACHE=.cache/preftune .venv/bin/python benchmarks/rl_world.py "
                           + " ".join(a for a in sys.argv[1:])}
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    rows = [[a, f"{r['tuned_mean']:.4f}", f"{results['base_mean']:.4f}", f"{r['gain']:+.4f}",
             f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]", f"{r['cpu_s'] / 60:.1f}", f"{r['wall_s'] / 60:.1f}"]
            for a, r in results["algos"].items()]
    curves = "\n".join(f"- {a}: " + ", ".join(f"step {s}: {v:.3f}" for s, v in r["curve"])
                       for a, r in results["algos"].items())
    out_md.write_text(f"""# Online RL on the verifiable world: does the held-out gold score rise?

Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; shared machine (load: {'; '.join(loads)}).

- versions: `{json.dumps(results['versions'])}`
- command: `{results['command']}`
- held-out: {args.heldout} world test-split prompts (never trained on), {args.samples} samples each at
  temperature 1 with the same seeds for the starting model and each tuned model; gain = mean over prompts
  of (tuned - start) gold total; 95% interval from a paired bootstrap over prompts (10,000 resamples).

{markdown_table(['algo', 'held-out gold (tuned)', 'held-out gold (start)', 'gain', 'paired 95% CI',
                 'train CPU min', 'train wall min'], rows)}

Training commands:

""" + "\n".join(f"- {a}: `{r['command']}`" for a, r in results["algos"].items()) + f"""

The curve (the run's own `eval/reward`: one sample per held-out prompt, fixed seed, every {args.eval_every} steps):

{curves}
""")
    print(out_md.read_text())


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
