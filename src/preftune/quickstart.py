"""`preftune quickstart`: the whole loop on built-in data and real small models, on a laptop CPU.

1. generate the verifiable preference world (data with a known truth) and check it
2. curate it (duplicates, conflicts, leaks into the test split) and describe it
3. train a reward model (minilm-l6) on it and evaluate it on held-out prompts
4. tune smollm2-135m with DPO + LoRA on pairs of its own samples ranked by the world's gold scorer
5. judge the tuned model against the starting model with the gold scorer (win rate, 95% interval),
   run the regression gate
6. write an HTML report of each run (the DPO one links the reward model's)

Each step is the same CLI command a user would type (printed before it runs), so the quickstart
doubles as a tour. Steps whose inputs already exist in the output folder are reused unless --fresh.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="run the whole loop on built-in data and real small models",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", default="quickstart_out", help="output folder (default: quickstart_out)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first and redo every step")
    p.add_argument("--fast", action="store_true",
                   help="tiny random models and a few steps: checks the wiring in about a minute (no real result)")
    p.add_argument("--skip-policy", action="store_true", help="stop after the reward model (no DPO, no generation)")
    p.set_defaults(func=run_quickstart)


def _step(title: str, argv: list[str]) -> None:
    from preftune.cli import main

    print(f"\n=== {title}\n$ preftune {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise ValueError(f"quickstart step failed (exit {code}): preftune {shlex.join(argv)}")
    print(f"--- {title}: done in {time.perf_counter() - t0:.0f} s", flush=True)


def run_quickstart(args) -> int:
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    from preftune.train.optim import auto_threads

    print(f"torch CPU threads: {auto_threads()}")
    t_start = time.perf_counter()
    fast = args.fast
    data = out / "data"
    n_pairs, n_test = (400, 100) if fast else (3000, 500)
    if not (data / "train.jsonl").exists():
        _step("1. generate the verifiable world",
              ["data", "world", "-o", str(data), "--num-pairs", str(n_pairs), "--num-test-pairs", str(n_test),
               "--noise", "0.05", "--seed", "0", "--force"])
    _step("1b. check every row", ["data", "check", str(data / "train.jsonl")])
    clean = data / "clean.jsonl"
    if not clean.exists():
        _step("2. curate: duplicates, conflicts, test-prompt leaks",
              ["data", "curate", str(data / "train.jsonl"), "-o", str(clean), "--test-file", str(data / "test.jsonl")])
    _step("2b. describe the data", ["data", "stats", str(clean)])

    rm_model, rm_steps = ("tiny-bert", ["max_steps=20"]) if fast else ("minilm-l6", QS_RM_ARGS)
    rm_run = out / "rm"
    if not (rm_run / "final").exists():
        _step("3. train a reward model",
              ["train", "rm", "--model", rm_model, "--data", str(clean), "--out", str(rm_run),
               "overwrite=true", "batch_size=16", "max_length=256", *rm_steps])
    _step("3b. evaluate it on held-out prompts", ["eval", "rm", str(rm_run), "--data", str(data / "test.jsonl")])
    rm_eval = json.loads((rm_run / "eval" / "rm.json").read_text())
    _write_data_stats(clean, rm_run / "data_stats.json")
    summary = {"rm_accuracy": rm_eval.get("accuracy"), "rm_run": str(rm_run)}
    if not args.skip_policy:
        summary.update(_policy_steps(out, data, fast))
    _step("6. write the HTML report of the reward model", ["report", str(rm_run)])
    if not args.skip_policy:
        # the DPO page links the reward model's page and shows its accuracy in its provenance
        _step("6b. write the HTML report of the DPO run (linking the reward model's)",
              ["report", str(out / "dpo"), "--related", str(rm_run)])
    page = out / ("dpo" if not args.skip_policy else "rm") / "report.html"
    summary["report_kib"] = round(page.stat().st_size / 1024)
    summary["minutes"] = round((time.perf_counter() - t_start) / 60, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n=== quickstart summary")
    for k, v in summary.items():
        print(f"  {k}: {v}")
    print(f"outputs are in {out}/ (data/, rm/, dpo/, summary.json); open {out}/"
          f"{'dpo' if not args.skip_policy else 'rm'}/report.html in a browser")
    return 0


def _policy_steps(out: Path, data: Path, fast: bool) -> dict:
    """On-policy DPO: the model's own samples ranked by the gold scorer, then a judged comparison."""
    from preftune.data.io import write_rows
    from preftune.world.generate import world_prompts

    policy = "tiny-llama" if fast else "smollm2-135m"
    n_prompts, n_eval, new_tokens = (16, 8, 16) if fast else (QS_TRAIN_PROMPTS, QS_EVAL_PROMPTS, QS_NEW_TOKENS)
    prompts_train = data / "prompts_train.jsonl"
    if not prompts_train.exists():
        write_rows(world_prompts(n_prompts, seed=0, split="train"), prompts_train)
    # --fast: a random tiny model's samples all score alike, so it trains on the world's own pairs
    pairs = data / "clean.jsonl" if fast else data / "onpolicy.jsonl"
    if not pairs.exists():
        _step("4. sample 4 answers per training prompt from the policy; gold ranks them (best vs worst)",
              ["sample-pairs", policy, "--prompts", str(prompts_train), "--scorer", "gold", "--num-samples", "4",
               "--max-new-tokens", str(new_tokens), "--batch-size", "32", "-o", str(pairs)])
    dpo_run = out / "dpo"
    if not (dpo_run / "final").exists():
        _step("4b. DPO with LoRA on those pairs (the adapter-disabled base is the reference: one copy in memory)",
              ["train", "dpo", "--model", policy, "--data", str(pairs), "--out", str(dpo_run), "overwrite=true",
               *(["lora.enabled=true", "reference=adapter", "max_steps=4", "batch_size=4", "max_length=256"]
                 if fast else QS_DPO_ARGS)])
    _step("5. judge tuned vs starting model on held-out prompts with the gold scorer",
          ["eval", "policy", str(dpo_run), "--baseline", policy, "--prompts", str(data / "prompts_test.jsonl"),
           "--num-prompts", str(n_eval), "--judge", "gold", "--max-new-tokens", str(new_tokens), "--batch-size", "32"])
    _step("5b. regression gate: cases the starting model passes and the tuned model fails",
          ["eval", "regress", str(dpo_run), "--baseline", policy, "--max-new-tokens", str(new_tokens),
           "--batch-size", "32"])
    _write_data_stats(pairs, dpo_run / "data_stats.json")
    pol = json.loads((dpo_run / "eval" / "policy.json").read_text())
    reg = json.loads((dpo_run / "eval" / "regress.json").read_text())
    ci = pol.get("win_rate_ci95") or pol.get("win_rate_ci")
    return {"win_rate": pol.get("win_rate"), "win_rate_ci95": ci, "lc_win_rate": pol.get("lc_win_rate"),
            "wins_ties_losses": [pol.get("wins"), pol.get("ties"), pol.get("losses")],
            "kl_k3": pol.get("kl_k3"), "regressions": reg["num_regressions"], "regress_cases": reg["num_cases"],
            "dpo_run": str(dpo_run)}


def _write_data_stats(path: Path, out: Path) -> None:
    from preftune.data.io import read_records
    from preftune.data.stats import compute_stats

    out.write_text(json.dumps(compute_stats(read_records(path)), indent=2))


# The quickstart's recipe (on 2 CPU cores within 15 minutes; numbers in the README).
QS_TRAIN_PROMPTS = 128
QS_EVAL_PROMPTS = 64
QS_NEW_TOKENS = 48
# examples/rm_world.yaml: 150 steps of 16 pairs reach ~0.94 held-out accuracy on the world
QS_RM_ARGS = ["heads=[auto]", "max_steps=150", "lr=1.5e-4", "warmup_ratio=0.1", "report_to=none"]
QS_DPO_ARGS = ["lora.enabled=true", "reference=adapter", "loss=sigmoid", "beta=0.1", "lr=5e-4", "epochs=2",
               "batch_size=8", "max_length=256", "warmup_ratio=0.1"]
