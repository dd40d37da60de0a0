"""DPO training, preftune vs TRL's DPOTrainer, side by side in one run.

    PREFTUNE_CACHE=/tmp/ptc .venv/bin/python benchmarks/dpo_vs_trl.py [--setups parity,tiny,smollm2]

Each contender trains in its own process (TRL in benchmarks/.trl-venv, preftune in .venv), runs
interleaved, from the same weights folder, the same pairs (chat template applied), batch size, max
length and optimiser (AdamW, same lr, linear schedule, clip 1.0, fp32, no gradient checkpointing).
Contenders: TRL default (a reference model), TRL precompute_ref_log_probs=True (its reference pass
counted), preftune reference=model, preftune reference=cache (its cache pass counted).
Writes benchmarks/results/dpo_vs_trl.md (and .json). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BENCH,
    PREFTUNE_PY,
    TRL_PY,
    as_conversation,
    fmt,
    load_pairs,
    machine,
    markdown_table,
    median,
    overall_pairs_per_s,
    ratio,
    run_worker,
    uptime,
    venv_versions,
    write_jsonl,
)
from rm_vs_trl import num_params, tiny_llama_config

LR = 1e-6
THREADS = [0]  # torch threads for both contenders (0 = torch default); set from --threads
BETA = 0.1
PARITY_LOSSES = (("sigmoid", 0.0), ("ipo", 0.0), ("hinge", 0.0), ("robust", 0.1))
CONTENDERS = (  # (name, venv python, worker, spec changes); interleaved in this order
    ("trl-default", TRL_PY, "trl_dpo_worker.py", {"precompute": False}),
    ("preftune-model", PREFTUNE_PY, "preftune_dpo_worker.py", {"reference": "model"}),
    ("trl-precompute", TRL_PY, "trl_dpo_worker.py", {"precompute": True}),
    ("preftune-cache", PREFTUNE_PY, "preftune_dpo_worker.py", {"reference": "cache"}),
)
# issue 5: (TRL numbers there, targets: speed ratio vs TRL default, vs TRL precompute, RSS ratio)
ISSUE = {"smollm2": (("default 0.062 pairs/s, 14.3 GB; precompute 0.078 pairs/s training + 146 s reference pass "
                      "= 0.058 pairs/s overall, 13.8 GB"), 2.5, 2.0, 0.3),
         "tiny": ("3.9 pairs/s, 2.4 GB", 2.0, None, None)}


def build_tiny_policy(out: Path) -> Path:
    """A random Llama causal LM (~7.4M parameters, tied embeddings) with SmolLM2's tokenizer."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from preftune.models import ASSETS

    tok = AutoTokenizer.from_pretrained(ASSETS / "smollm2-tokenizer")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tok, hidden=128, layers=4, inter=576, tied=True))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out


def build_perturbed(src: Path, out: Path, scale: float = 0.5, seed: int = 1) -> Path:
    """The policy for the parity check: `src` + seeded Gaussian noise of `scale` x each tensor's std,
    so that the policy and its reference (= src) give different log-probs."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * scale)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def fitting_pairs(rows: list[dict], model: Path, n: int, max_length: int) -> list[dict]:
    """The first n pairs whose prompt + response (chat template applied) fit max_length on both sides,
    so that no truncation rule (TRL keeps the start, preftune the prompt's end) touches the parity batch."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    out = []
    for r in rows:
        c = as_conversation(r)
        lens = [len(tok.apply_chat_template(c["prompt"] + c[s], tokenize=True, return_dict=True)["input_ids"])
                for s in ("chosen", "rejected")]
        if max(lens) <= max_length:
            out.append(c)
        if len(out) == n:
            break
    return out


def base_spec(model: Path, data: Path, work: Path, name: str, batch: int, steps: int, max_length: int) -> dict:
    return {"model_path": str(model), "ref_path": None, "data_path": str(data), "batch_size": batch,
            "max_length": max_length, "max_steps": steps, "warmup": 1, "lr": LR, "beta": BETA,
            "loss_type": "sigmoid", "label_smoothing": 0.0, "seed": 0, "out_dir": str(work / "runs" / name),
            "gradient_checkpointing": False, "bf16": False, "num_threads": THREADS[0]}


def run_parity(args, work: Path, log: Path) -> dict:
    base = build_tiny_policy(work / "tiny-llama-dpo")
    policy = build_perturbed(base, work / "tiny-llama-dpo-perturbed")
    data = write_jsonl(fitting_pairs(load_pairs(64), base, args.parity_pairs, 512),
                       work / "data" / f"dpo-parity{args.parity_pairs}.jsonl")
    out = {"policy": str(policy), "reference": str(base), "pairs": args.parity_pairs, "losses": []}
    for loss, eps in PARITY_LOSSES:
        row = {"loss": loss, "label_smoothing": eps}
        for contender, py, script in (("trl", TRL_PY, "trl_dpo_worker.py"),
                                      ("preftune", PREFTUNE_PY, "preftune_dpo_worker.py")):
            name = f"parity-{loss}-{contender}"
            s = base_spec(policy, data, work, name, args.parity_pairs, 1, 512)
            s.update(ref_path=str(base), loss_type=loss, label_smoothing=eps, reference="model")
            r = run_worker(py, script, s, log, name, nice=args.nice)
            row[contender] = (r.get("first_losses") or [None])[0]
            if not r["ok"]:
                print(r.get("error_tail", "")[-2000:], flush=True)
        row["abs_diff"] = abs(row["trl"] - row["preftune"]) if None not in (row["trl"], row["preftune"]) else None
        out["losses"].append(row)
        print(f"[parity] {row}", flush=True)
    return out


def run_speed(setup: str, args, work: Path, log: Path) -> dict:
    if setup == "smollm2":
        from preftune.models import resolve_model_path

        model = Path(resolve_model_path("smollm2-135m"))
        pairs, batch, steps = args.smollm2_pairs, 4, args.smollm2_steps
    else:
        model = build_tiny_policy(work / "tiny-llama-dpo")
        pairs, batch, steps = args.tiny_pairs, 8, -1
    rows = [as_conversation(r) for r in load_pairs(pairs)]
    data = write_jsonl(rows, work / "data" / f"dpo-{setup}-{pairs}.jsonl")
    if steps < 0:
        steps = -(-pairs // batch)  # one epoch
    res = {"setup": setup, "model": str(model), "params": num_params(model), "pairs": pairs, "batch": batch,
           "steps": steps, "runs": []}
    print(f"[{setup}] {res['params']:,} parameters, {pairs} pairs, {steps} steps, {uptime()}", flush=True)
    names = [c for c in args.contenders.split(",")]
    for rep in range(args.repeats):
        for contender, py, script, extra in CONTENDERS:
            if contender not in names:
                continue
            name = f"{setup}-{contender}-{rep}"
            s = base_spec(model, data, work, name, batch, steps, 512)
            s.update(extra)
            if contender.startswith("preftune"):
                s["overrides"] = list(args.preftune_override or [])
            r = run_worker(py, script, s, log, name, nice=args.nice)
            r["contender"] = contender
            if r.get("steady_pairs_per_s"):
                r["overall_pairs_per_s"] = overall_pairs_per_s(pairs, r["steady_pairs_per_s"], r.get("ref_pass_s", 0.0))
            res["runs"].append(r)
            print(f"[{setup}] {name}: ok={r['ok']} steady={fmt(r.get('steady_pairs_per_s'))} pairs/s, "
                  f"ref pass {fmt(r.get('ref_pass_s'))} s, overall={fmt(r.get('overall_pairs_per_s'))}, "
                  f"rss={r['peak_rss_mb']:.0f} MB, pad={fmt(r.get('padding_share'))}, "
                  f"loss={r.get('first_losses')} | {r['load_after']}", flush=True)
            if not r["ok"]:
                print(r.get("error_tail", "")[-2000:], flush=True)
    return res


def cpu_rates(r: dict, pairs: int, batch: int) -> None:
    """Load-robust rates from process CPU time (one thread per contender: CPU time = work done):
    pairs per CPU-second of training, and one epoch including the reference pass (its CPU time when
    measured, else its wall time, which can only overstate it)."""
    if r.get("steady_step_cpu_s"):
        r["steady_pairs_per_cpu_s"] = batch / r["steady_step_cpu_s"]
        ref = r.get("ref_pass_cpu_s") or r.get("ref_pass_s") or 0.0
        r["overall_pairs_per_cpu_s"] = overall_pairs_per_s(pairs, r["steady_pairs_per_cpu_s"], ref)


def summarise(res: dict) -> dict:
    out = {}
    for r in res["runs"]:
        cpu_rates(r, res["pairs"], res["batch"])
    for c, *_ in CONTENDERS:
        runs = [r for r in res["runs"] if r["contender"] == c and r["ok"]]
        out[c] = {k: median([r.get(k) for r in runs]) for k in
                  ("steady_pairs_per_s", "ref_pass_s", "overall_pairs_per_s", "peak_rss_mb", "padding_share",
                   "steady_step_s", "steady_step_cpu_s", "num_pairs_kept", "total_s", "steady_pairs_per_cpu_s",
                   "overall_pairs_per_cpu_s", "ref_pass_cpu_s")} if runs else None
    return out


def write_report(parity: dict | None, speeds: list[dict], args, path: Path, started: str) -> None:
    lines = ["# DPO training: preftune vs TRL DPOTrainer", "",
             f"Run {started} UTC on this machine: {machine()}.",
             "The machine is shared with other engineers: absolute numbers are noisy, ratios (same run,",
             "interleaved) are what to read. Load (`uptime`) is recorded with each run below.", "",
             f"- preftune venv: `{json.dumps(venv_versions(PREFTUNE_PY))}`",
             f"- TRL venv: `{json.dumps(venv_versions(TRL_PY))}`", "",
             "Command:", "", "```", args.command or "PREFTUNE_CACHE=/tmp/ptc .venv/bin/python " + " ".join(sys.argv),
             "```", "",
             "Data: the first N rows of `alpacaeval1_gpt4_pairs.jsonl.gz` (fixed, not sampled) as chat messages "
             "(the chat template applied by both); max length 512; AdamW, lr "
             f"{LR}, β {BETA}, linear schedule, no warm-up, clip 1.0, fp32 (TRL `bf16=False`), no gradient "
             "checkpointing, torch default threads. pairs/s (steady) = batch / mean step time after 1 warm-up "
             "step (optimiser-step timestamps); torch threads per contender: "
             + (str(THREADS[0]) if THREADS[0] else "default")
             + "; overall = N / (N / steady + reference pass), i.e. one epoch "
             "including the one-off reference pass (TRL precompute, preftune reference=cache). Peak RSS = "
             "`ru_maxrss` of the worker process (os.wait4), whole run including the reference pass.", ""]
    for res in speeds:
        s = summarise(res)
        text, t_def, t_pre, t_rss = ISSUE[res["setup"]]
        lines += [(f"## {res['setup']} ({res['params']:,} parameters, {res['pairs']} pairs, batch {res['batch']}, "
                   f"{res['steps']} steps)"), "", f"Issue 5's TRL numbers: {text}.", ""]
        rows = []
        d, p = s.get("trl-default") or {}, s.get("trl-precompute") or {}
        for c, *_ in CONTENDERS:
            if not s.get(c):
                continue
            v = s[c]
            rows.append([c, v["steady_pairs_per_s"], v["ref_pass_s"], v["overall_pairs_per_s"],
                         ratio(v["overall_pairs_per_s"], d.get("overall_pairs_per_s")),
                         ratio(v["overall_pairs_per_s"], p.get("overall_pairs_per_s")),
                         v["steady_step_cpu_s"], v["overall_pairs_per_cpu_s"],
                         ratio(v["overall_pairs_per_cpu_s"], d.get("overall_pairs_per_cpu_s")),
                         ratio(v["overall_pairs_per_cpu_s"], p.get("overall_pairs_per_cpu_s")),
                         v["peak_rss_mb"], ratio(v["peak_rss_mb"], d.get("peak_rss_mb")), v["padding_share"]])
        lines += [markdown_table(["contender", "pairs/s train (wall)", "ref pass s (wall)", "pairs/s overall (wall)",
                                  "x TRL default", "x TRL precompute", "CPU s/step", "pairs/CPU-s overall",
                                  "x TRL default", "x TRL precompute", "peak RSS MB", "RSS / TRL default",
                                  "padding share"], rows), ""]
        for c in ("preftune-model", "preftune-cache"):
            v = s.get(c)
            if not v:
                continue
            # CPU-time ratios: the wall clock of one run on this shared machine can be stretched by others
            sd = ratio(v["overall_pairs_per_cpu_s"], d.get("overall_pairs_per_cpu_s"))
            sp = ratio(v["overall_pairs_per_cpu_s"], p.get("overall_pairs_per_cpu_s"))
            trl_rss = [x["peak_rss_mb"] for x in (s.get("trl-default"), s.get("trl-precompute")) if x]
            rss = ratio(v["peak_rss_mb"], min(trl_rss)) if trl_rss else None
            verdict = [(f"{sd and round(sd, 2)}x TRL default (target >= {t_def}x: "
                        f"{'met' if sd and sd >= t_def else 'MISSED'})")]
            if t_pre:
                verdict.append(f"{sp and round(sp, 2)}x TRL precompute (target >= {t_pre}x: "
                               f"{'met' if sp and sp >= t_pre else 'MISSED'})")
            if t_rss:
                verdict.append(f"RSS {rss and round(rss, 2)}x TRL's lower (target <= {t_rss}x: "
                               f"{'met' if rss and rss <= t_rss else 'MISSED'})")
            lines += [f"- {c} (CPU-time ratios): " + "; ".join(verdict)]
        lines += ["", "Runs (in order):", ""]
        lines += [markdown_table(["run", "step ends (s)", "steady s/step", "CPU s/step", "ref pass s", "ref pass CPU s",
                                  "RSS MB", "pad share", "first loss", "load before", "load after"],
                                 [[r["name"], " ".join(f"{x:.0f}" for x in r.get("step_end_s", [])),
                                   r.get("steady_step_s"),
                                   r.get("steady_step_cpu_s"), r.get("ref_pass_s"), r.get("ref_pass_cpu_s"),
                                   r["peak_rss_mb"], r.get("padding_share"), (r.get("first_losses") or [None])[0],
                                   r["load_before"].split("load average:")[-1],
                                   r["load_after"].split("load average:")[-1]]
                                  for r in res["runs"]]), ""]
    if parity:
        lines += ["## Numeric parity (first-step loss, same batch)", "",
                  (f"Policy = the tiny random Llama plus seeded noise (`{parity['policy']}`), reference = the "
                   f"unperturbed folder (`{parity['reference']}`), passed to both (TRL `ref_model=`, preftune "
                   f"`reference=model ref_model=...`). The first {parity['pairs']} pairs that fit in 512 tokens "
                   "as one batch, one step; TRL logs the mean over its (shuffled) batch, which is order-free."), ""]
        lines += [markdown_table(["loss", "ε", "TRL", "preftune", "|diff|", "<= 1e-4"],
                                 [[p["loss"], p["label_smoothing"], p["trl"], p["preftune"], p["abs_diff"],
                                   "yes" if p["abs_diff"] is not None and p["abs_diff"] <= 1e-4 else "NO"]
                                  for p in parity["losses"]]), ""]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"parity": parity, "speed": speeds}, indent=1, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="parity,tiny,smollm2")
    ap.add_argument("--contenders", default=",".join(c[0] for c in CONTENDERS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tiny-pairs", type=int, default=128)
    ap.add_argument("--smollm2-pairs", type=int, default=32)
    ap.add_argument("--smollm2-steps", type=int, default=4, help="1 warm-up + N-1 measured steps")
    ap.add_argument("--parity-pairs", type=int, default=4)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--from-json", help="rewrite the report from this results .json (no runs)")
    ap.add_argument("--started", help="with --from-json: when that run started (UTC)")
    ap.add_argument("--command", help="with --from-json: the command(s) that produced the results")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of both contenders (0 = torch default)")
    ap.add_argument("--preftune-override", action="append", help="extra preftune key=value (e.g. chunk_size=256)")
    ap.add_argument("--work", default=os.path.join(os.environ.get("PREFTUNE_CACHE", "/tmp/ptc"), "bench"))
    ap.add_argument("--out", default=str(BENCH / "results" / "dpo_vs_trl.md"))
    args = ap.parse_args()
    THREADS[0] = args.threads
    work = Path(args.work)
    log = work / "logs"
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    setups = args.setups.split(",")
    if args.from_json:  # rewrite the report from a previous run's results
        saved = json.loads(Path(args.from_json).read_text())
        parity, speeds = saved["parity"], saved["speed"]
        started = args.started or started
    else:
        parity = run_parity(args, work, log) if "parity" in setups else None
        speeds = [run_speed(s, args, work, log) for s in setups if s != "parity"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(parity, speeds, args, out, started)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
