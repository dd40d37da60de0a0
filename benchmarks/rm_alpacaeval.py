"""Reward-model quality on real, length-biased labels: AlpacaEval 1 GPT-4 pairs (issue 4, "On real data").

End to end from the shared file, every step a preftune CLI call except the seeded subsample:

  1. `preftune data convert --from alpacaeval`  (42k pairs over 805 prompts)
  2. `preftune data split --test-frac F --seed S`  (by prompt: no prompt on both sides)
  3. subsample (seeded): N_TRAIN pairs from the train prompts, N_TEST pairs from the test prompts.
     With --balance the training sample holds as many chosen-shorter as chosen-longer pairs
     (by characters of the final answer); the test sample always keeps the natural mix, so the
     "longer answer wins" baseline is measured on the same pairs as the RM.
  4. `preftune train rm --model minilm-l6 ...` (under `nice` and `timeout`)
  5. `preftune eval rm RUN --data TEST` -> RUN/eval/rm.json

Prints one markdown table row and writes WORK/NAME.summary.json. The data is CC BY-NC: it stays
in WORK (outside the repository); only aggregate numbers are reported.

  export PREFTUNE_CACHE=/tmp/ptc
  .venv/bin/python benchmarks/rm_alpacaeval.py --name balanced --balance \\
      --n-train 800 --n-test 400 --max-length 256 lr=3e-5 warmup_ratio=0.1
Extra key=value arguments go to `preftune train rm` unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFTUNE = str(ROOT / ".venv" / "bin" / "preftune")
SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_eval" / "alpacaeval1_gpt4_pairs.jsonl.gz"


def run(cmd: list[str], timeout: int | None = None) -> None:
    print("$", shlex.join(cmd), flush=True)
    if timeout:
        cmd = ["timeout", str(timeout), *cmd]
    subprocess.run(cmd, check=True)


def answer_len(messages) -> int:
    """Characters of the final answer (a message list or a plain string)."""
    if isinstance(messages, str):
        return len(messages)
    return len(messages[-1]["content"])


def chosen_shorter(row: dict) -> bool | None:
    """True / False by answer length; None on equal lengths (neither group)."""
    c, r = answer_len(row["chosen"]), answer_len(row["rejected"])
    return None if c == r else c < r


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def sample(rows: list[dict], n: int, seed: int, balance: bool) -> list[dict]:
    """`n` rows drawn without replacement (seeded). balance: n/2 chosen-shorter + n/2 chosen-longer
    (equal-length pairs left out); raises when a group is too small rather than silently shrinking."""
    rng = random.Random(seed)
    if not balance:
        if n > len(rows):
            raise ValueError(f"asked {n} rows, only {len(rows)} available")
        return rng.sample(rows, n)
    short = [r for r in rows if chosen_shorter(r) is True]
    long_ = [r for r in rows if chosen_shorter(r) is False]
    half = n // 2
    if half > len(short) or n - half > len(long_):
        raise ValueError(f"balance: asked {half}+{n - half}, have {len(short)} shorter / {len(long_)} longer")
    out = rng.sample(short, half) + rng.sample(long_, n - half)
    rng.shuffle(out)
    return out


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=SRC)
    ap.add_argument(
        "--work", type=Path, default=Path("/tmp/aeval"), help="work folder (keep it outside the repo)"
    )
    ap.add_argument("--name", required=True, help="configuration name (run folder WORK/runs/NAME)")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0, help="split, subsample and training seed")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=600)
    ap.add_argument(
        "--n-test-shorter",
        type=int,
        default=0,
        help="extra held-out chosen-shorter pairs (disjoint from the main test sample) evaluated apart, "
        "because the natural mix holds only ~16%% of them",
    )
    ap.add_argument(
        "--balance", action="store_true", help="equal chosen-shorter / chosen-longer training pairs"
    )
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--timeout", type=int, default=0, help="seconds for the training command (0 = none)")
    ap.add_argument("overrides", nargs="*", help="key=value passed to `preftune train rm`")
    a = ap.parse_args(argv)

    a.work.mkdir(parents=True, exist_ok=True)
    all_pairs = a.work / "all.jsonl"
    if not all_pairs.exists():
        run([PREFTUNE, "data", "convert", "--from", "alpacaeval", str(a.src), "-o", str(all_pairs)])
    split = a.work / f"split-s{a.seed}-f{a.test_frac}"
    if not (split / "test.jsonl").exists():
        run(
            [
                PREFTUNE,
                "data",
                "split",
                str(all_pairs),
                "--test-frac",
                str(a.test_frac),
                "-o",
                str(split),
                "--seed",
                str(a.seed),
            ]
        )
    train_all, test_all = read_jsonl(split / "train.jsonl"), read_jsonl(split / "test.jsonl")
    train_prompts = {json.dumps(r["prompt"]) for r in train_all}
    assert not any(json.dumps(r["prompt"]) in train_prompts for r in test_all), "prompt leak"

    tag = "bal" if a.balance else "nat"
    train_f = a.work / f"train-{tag}-n{a.n_train}-s{a.seed}.jsonl"
    test_f = a.work / f"test-n{a.n_test}-s{a.seed}.jsonl"
    train_rows = sample(train_all, a.n_train, a.seed, a.balance)
    test_rows = sample(test_all, a.n_test, a.seed + 1, balance=False)
    write_jsonl(train_rows, train_f)
    write_jsonl(test_rows, test_f)
    extra_f = a.work / f"test-shorter-n{a.n_test_shorter}-s{a.seed}.jsonl"
    if a.n_test_shorter:
        taken = {id(r) for r in test_rows}
        pool = [r for r in test_all if id(r) not in taken and chosen_shorter(r) is True]
        write_jsonl(sample(pool, a.n_test_shorter, a.seed + 2, balance=False), extra_f)

    out = a.work / "runs" / a.name
    train_cmd = [
        "nice",
        PREFTUNE,
        "train",
        "rm",
        "--model",
        a.model,
        "--data",
        str(train_f),
        "--out",
        str(out),
        f"max_length={a.max_length}",
        f"batch_size={a.batch_size}",
        f"seed={a.seed}",
        "overwrite=true",
        "report_to=none",
        *a.overrides,
    ]
    load0 = os.getloadavg()[0]
    t0 = time.time()
    run(train_cmd, timeout=a.timeout or None)
    train_s = time.time() - t0
    run(["nice", PREFTUNE, "eval", "rm", str(out), "--data", str(test_f), "--force"])
    rm = json.loads((out / "eval" / "rm.json").read_text())
    extra = {}
    if a.n_test_shorter:
        extra_json = out / "eval" / "rm_shorter.json"
        run(
            [
                "nice",
                PREFTUNE,
                "eval",
                "rm",
                str(out),
                "--data",
                str(extra_f),
                "--json",
                str(extra_json),
                "--force",
            ]
        )
        ex = json.loads(extra_json.read_text())
        extra = {
            "extra_shorter_accuracy": ex.get("accuracy"),
            "extra_shorter_n": ex.get("num_chosen_shorter"),
        }

    import torch
    import transformers

    n_short = sum(chosen_shorter(r) is True for r in train_rows)
    summary = {
        "name": a.name,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_at_start": round(load0, 2),
        "load_at_end": round(os.getloadavg()[0], 2),
        "command": shlex.join([sys.executable, *sys.argv]),
        "train_cmd": shlex.join(train_cmd),
        "n_train": len(train_rows),
        "n_train_chosen_shorter": n_short,
        "n_test": len(test_rows),
        **extra,
        "train_prompts": len({json.dumps(r["prompt"]) for r in train_rows}),
        "test_prompts": len({json.dumps(r["prompt"]) for r in test_rows}),
        "train_seconds": round(train_s, 1),
        "pairs_per_s": round(len(train_rows) / train_s, 3),
        **{
            k: rm.get(k)
            for k in (
                "accuracy",
                "accuracy_chosen_shorter",
                "num_chosen_shorter",
                "accuracy_chosen_longer",
                "num_chosen_longer",
                "length_baseline_accuracy",
                "reward_length_corr",
            )
        },
    }
    corr = summary["reward_length_corr"]  # eval rm gives {pearson, spearman, n}
    summary["reward_length_spearman"] = corr.get("spearman") if isinstance(corr, dict) else corr
    (a.work / f"{a.name}.summary.json").write_text(json.dumps(summary, indent=2))
    f = lambda x: "n/a" if x is None else f"{x:.3f}"
    print(
        "| config | train (shorter-chosen) | test | accuracy | shorter-chosen | longer-chosen | "
        "length baseline | reward-length spearman | extra shorter-chosen | train s |"
    )
    print(
        f"| {a.name} | {len(train_rows)} ({n_short}) | {len(test_rows)} | {f(summary['accuracy'])} | "
        f"{f(summary['accuracy_chosen_shorter'])} (n={summary['num_chosen_shorter']}) | "
        f"{f(summary['accuracy_chosen_longer'])} (n={summary['num_chosen_longer']}) | "
        f"{f(summary['length_baseline_accuracy'])} | {f(summary['reward_length_spearman'])} | "
        f"{f(extra.get('extra_shorter_accuracy'))} | {train_s:.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
