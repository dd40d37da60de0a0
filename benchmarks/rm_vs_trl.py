"""Reward-model training, preftune vs TRL's RewardTrainer, side by side in one run.

    PREFTUNE_CACHE=/tmp/ptc .venv/bin/python benchmarks/rm_vs_trl.py [--setups minilm,tiny] [--repeats 1]

Each contender trains in its own process (TRL in benchmarks/.trl-venv, preftune in .venv), runs
interleaved (TRL, preftune, TRL, preftune ...), from the same saved weights folder and the same pairs.
Writes benchmarks/results/rm_vs_trl.md (and .json). See benchmarks/README.md.
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
    ratio,
    run_worker,
    uptime,
    venv_versions,
    write_jsonl,
)

# Targets from issue 4 (pairs/s ratio, peak-RSS ratio) and TRL's numbers quoted there.
TARGETS = {"minilm": (2.0, 0.7), "tiny": (1.5, None)}
ISSUE_TRL = {"minilm": "1.63 pairs/s, 2.7 GB", "tiny": "15.3 pairs/s, 1.36 GB"}
LR = 1e-5
THREADS = [0]  # torch threads for both contenders (0 = torch default); set from --threads
HEAD_SCALE = 10.0  # the random score head's init (std 0.02) gives rewards ~0.01: loss ~ log 2 for any input


def build_minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 + a seeded 1-output head, dropout 0 (TRL disables dropout; preftune's loop
    keeps the model's own, so the folder fixes it for both), saved once so both load the same head."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from preftune.models import resolve_model_path

    src = resolve_model_path("minilm-l6")
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1, hidden_dropout_prob=0.0,
                                                          attention_probs_dropout_prob=0.0)
    with torch.no_grad():  # rewards of order 1, so that the first-step loss is sensitive to the inputs
        model.classifier.weight.mul_(HEAD_SCALE)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def tiny_llama_config(tok, hidden: int, layers: int, inter: int, tied: bool):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       tie_word_embeddings=tied)


def build_tiny_rm(out: Path) -> Path:
    """A random Llama reward model (~5.3M parameters) with SmolLM2's tokenizer and chat template."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from preftune.models import ASSETS

    tok = AutoTokenizer.from_pretrained(ASSETS / "smollm2-tokenizer")
    cfg = tiny_llama_config(tok, hidden=96, layers=6, inter=256, tied=False)
    cfg.num_labels = 1
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():
        model.score.weight.mul_(HEAD_SCALE)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def num_params(path: Path) -> int:
    import math

    from safetensors import safe_open

    n = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118 (not a dict)
    return n


def spec_for(setup: str, model: Path, data: Path, work: Path, name: str, pairs: int, steps: int, batch: int) -> dict:
    return {"model_path": str(model), "data_path": str(data), "batch_size": batch, "max_length": 512,
            "max_steps": steps, "warmup": 1, "lr": LR, "seed": 0, "out_dir": str(work / "runs" / name),
            "eos_token": "[SEP]" if setup == "minilm" else None, "gradient_checkpointing": False,
            "num_threads": THREADS[0]}


def multiset(rows_ids: list, rows_mask: list | None) -> list:
    out = []
    for i, ids in enumerate(rows_ids):
        if rows_mask is not None:
            ids = [t for t, m in zip(ids, rows_mask[i]) if m]
        out.append(tuple(ids))
    return sorted(out)


def run_setup(setup: str, args, work: Path, log: Path) -> dict:
    rows = load_pairs(args.pairs)
    if setup == "minilm":
        model = build_minilm(work / "minilm-l6-rm")
        data = write_jsonl(rows, work / "data" / f"alpaca{args.pairs}.jsonl")
        parity_data = write_jsonl(rows[:args.parity_pairs], work / "data" / f"alpaca{args.parity_pairs}.jsonl")
    else:
        model = build_tiny_rm(work / "tiny-llama-rm")
        data = write_jsonl([as_conversation(r) for r in rows], work / "data" / f"alpaca{args.pairs}-chat.jsonl")
        parity_data = write_jsonl([as_conversation(r) for r in rows[:args.parity_pairs]],
                                  work / "data" / f"alpaca{args.parity_pairs}-chat.jsonl")
    res: dict = {"setup": setup, "model": str(model), "params": num_params(model), "data": str(data),
                 "runs": [], "parity": {}}
    print(f"[{setup}] {res['params']:,} parameters, {uptime()}", flush=True)

    if setup == "minilm":  # what users hit first: BERT has no EOS token
        s = spec_for(setup, model, data, work, "trl-noeos", args.pairs, 1, args.batch)
        s["eos_token"] = None
        r = run_worker(TRL_PY, "trl_rm_worker.py", s, log, f"{setup}-trl-noeos", nice=args.nice)
        res["trl_without_eos"] = r.get("crash") or r.get("error_tail", "")[-300:] or "no crash"
        print(f"[{setup}] TRL without eos_token: {res['trl_without_eos'][:160]}", flush=True)

    contenders = [("trl", TRL_PY, "trl_rm_worker.py"), ("preftune", PREFTUNE_PY, "preftune_rm_worker.py")]
    if args.trl_defaults:  # TRL as users get it: bf16 autocast on CPU and gradient checkpointing on
        contenders.append(("trl-defaults", TRL_PY, "trl_rm_worker.py"))
    variants = dict(v.split(":", 1) for v in args.preftune_variant or [])  # name -> "k=v,k=v"
    contenders += [(f"preftune-{n}", PREFTUNE_PY, "preftune_rm_worker.py") for n in variants]
    for rep in range(0 if args.skip_speed else args.repeats):
        for contender, py, script in contenders:
            name = f"{setup}-{contender}-{rep}"
            s = spec_for(setup, model, data, work, name, args.pairs, args.steps, args.batch)
            s["overrides"] = list(args.preftune_override or [])
            if contender == "trl-defaults":
                s.update(bf16=None, gradient_checkpointing=True)
            if contender.startswith("preftune-"):
                s["overrides"] += variants[contender[len("preftune-"):]].split(",")
            r = run_worker(py, script, s, log, name, nice=args.nice)
            r["contender"] = contender
            res["runs"].append(r)
            print(f"[{setup}] {name}: ok={r['ok']} pairs/s={fmt(r.get('epoch_pairs_per_s'))} "
                  f"steady={fmt(r.get('steady_pairs_per_s'))} rss={r['peak_rss_mb']:.0f} MB "
                  f"pad={fmt(r.get('padding_share'))} dropped={r.get('num_pairs_dropped')} | {r['load_after']}",
                  flush=True)
            if not r["ok"]:
                print(r.get("error_tail", "")[-2000:], flush=True)

    # parity: the first `parity_pairs` pairs as ONE batch, one step, same weights. The batch mean is
    # order-free, so TRL's shuffled sampler still sees the same batch.
    pp = args.parity_pairs
    cap_pt, cap_trl = work / f"{setup}-parity-preftune.json", work / f"{setup}-parity-trl.json"
    s = spec_for(setup, model, parity_data, work, f"{setup}-parity-trl", pp, 1, pp)
    s["capture_batch"] = str(cap_trl)
    rt = run_worker(TRL_PY, "trl_rm_worker.py", s, log, f"{setup}-parity-trl", nice=args.nice)
    par = {"pairs": pp, "trl_loss": (rt.get("first_losses") or [None])[0], "trl_kept": rt.get("num_pairs_kept")}
    # decoders: the default (prefix-shared) layout, and the padded layout whose rows can be compared with TRL's
    layouts = ["auto"] if setup == "minilm" else ["auto", "padded"]
    for layout in layouts:
        s = spec_for(setup, model, parity_data, work, f"{setup}-parity-preftune-{layout}", pp, 1, pp)
        s["overrides"] = [f"layout={layout}", "micro_tokens=0"]  # one piece: the whole batch is captured
        if layout == layouts[-1]:
            s["capture_batch"] = str(cap_pt)
        rp = run_worker(PREFTUNE_PY, "preftune_rm_worker.py", s, log, f"{setup}-parity-preftune-{layout}",
                        nice=args.nice)
        par[f"preftune_loss_{layout}"] = (rp.get("first_losses") or [None])[0]
    par["preftune_loss"] = par["preftune_loss_auto"]
    try:
        a, b = json.loads(cap_pt.read_text()), json.loads(cap_trl.read_text())
        par["same_token_ids"] = multiset(a["input_ids"], a.get("attention_mask")) == \
            multiset(b["input_ids"], b.get("attention_mask"))
    except (OSError, KeyError, ValueError) as e:
        par["same_token_ids"] = f"n/a ({e})"
    if setup == "minilm":
        # TRL tokenises "prompt+chosen" as one text ([CLS] prompt+chosen [SEP] [SEP]); preftune uses the
        # text-pair encoding ([CLS] prompt [SEP] chosen [SEP], token types 0/1). To compare the losses on
        # the same batch, TRL also trains one step on exactly the tensors preftune computed on.
        s = spec_for(setup, model, parity_data, work, f"{setup}-parity-trl-same", pp, 1, pp)
        s["prebatched"] = str(cap_pt)
        rs = run_worker(TRL_PY, "trl_rm_worker.py", s, log, f"{setup}-parity-trl-same", nice=args.nice)
        par["trl_loss_same_tensors"] = (rs.get("first_losses") or [None])[0]
        if not rs["ok"]:
            print(rs.get("error_tail", "")[-2000:], flush=True)
    ref = par.get("trl_loss_same_tensors", par["trl_loss"])
    diffs = [abs(par[f"preftune_loss_{lay}"] - ref) for lay in layouts
             if None not in (par[f"preftune_loss_{lay}"], ref)]
    par["abs_diff"] = max(diffs) if len(diffs) == len(layouts) else None
    res["parity"] = par
    print(f"[{setup}] parity: {par}", flush=True)
    return res


def summarise(res: dict) -> dict:
    def agg(contender, key):
        return median([r.get(key) for r in res["runs"] if r["contender"] == contender and r["ok"]])
    out = {}
    for c in dict.fromkeys(r["contender"] for r in res["runs"]) or ("trl", "preftune"):
        out[c] = {k: agg(c, k) for k in ("epoch_pairs_per_s", "steady_pairs_per_s", "peak_rss_mb", "padding_share",
                                          "num_pairs_dropped", "num_pairs_kept", "total_s", "epoch_pairs_per_cpu_s",
                                          "real_tokens", "computed_positions", "epoch_train_s")}
        runs = [r for r in res["runs"] if r["contender"] == c]
        out[c]["num_pairs_truncated"] = runs[0].get("num_pairs_truncated") if runs else None
    return out


def write_report(results: list[dict], args, path: Path, started: str) -> None:
    lines = ["# Reward-model training: preftune vs TRL RewardTrainer", "",
             f"Run {started} UTC on this machine: {machine()}.",
             "The machine is shared with other engineers: absolute numbers are noisy, ratios (same run,",
             "interleaved) are what to read. Load (`uptime`) is recorded with each run below.", "",
             f"- preftune venv: `{json.dumps(venv_versions(PREFTUNE_PY))}`",
             f"- TRL venv: `{json.dumps(venv_versions(TRL_PY))}`", "",
             "Command:", "", "```", "PREFTUNE_CACHE=/tmp/ptc .venv/bin/python " + " ".join(sys.argv), "```", "",
             f"Data: the first {args.pairs} rows of `alpacaeval1_gpt4_pairs.jsonl.gz` (fixed, not sampled); "
             f"batch {args.batch}, max length 512, AdamW lr {LR}, linear schedule, no warm-up, grad clip 1.0, "
             "no gradient checkpointing, fp32, torch threads per contender: "
             + (str(THREADS[0]) if THREADS[0] else "default")
             + ". One epoch "
             "(pairs/s = pairs trained / time from the first forward to the last optimiser step; "
             "'steady' excludes the first step). Peak RSS = `ru_maxrss` of the worker process (os.wait4).", ""]
    for res in results:
        s = summarise(res)
        t, p = s["trl"], s["preftune"]
        speed, mem = TARGETS[res["setup"]]
        sp = ratio(p["epoch_pairs_per_s"], t["epoch_pairs_per_s"])
        rss = ratio(p["peak_rss_mb"], t["peak_rss_mb"])
        lines += [f"## {res['setup']} ({res['params']:,} parameters)", "",
                  f"Issue 4's TRL numbers for this setup: {ISSUE_TRL[res['setup']]}.", ""]
        rows = [["pairs/s (epoch)", t["epoch_pairs_per_s"], p["epoch_pairs_per_s"], sp,
                 f">= {speed}x: {'met' if sp and sp >= speed else 'MISSED'}"],
                ["pairs/s (steady)", t["steady_pairs_per_s"], p["steady_pairs_per_s"],
                 ratio(p["steady_pairs_per_s"], t["steady_pairs_per_s"]), ""],
                ["peak RSS (MB)", t["peak_rss_mb"], p["peak_rss_mb"], rss,
                 f"<= {mem}x: {'met' if rss and rss <= mem else 'MISSED'}" if mem else ""],
                ["pairs per CPU-second (load-robust)", t["epoch_pairs_per_cpu_s"], p["epoch_pairs_per_cpu_s"],
                 ratio(p["epoch_pairs_per_cpu_s"], t["epoch_pairs_per_cpu_s"]), ""],
                ["positions computed / s", ratio(t["computed_positions"], t["epoch_train_s"]),
                 ratio(p["computed_positions"], p["epoch_train_s"]), None, ""],
                ["padding share of computed positions", t["padding_share"], p["padding_share"], None, ""],
                ["real tokens computed", t["real_tokens"], p["real_tokens"], None, ""],
                ["pairs dropped for length", t["num_pairs_dropped"], p["num_pairs_dropped"], None,
                 "TRL filters silently; preftune truncates and counts"],
                ["pairs truncated (counted)", "-", p["num_pairs_truncated"], None, ""],
                ["wall incl. load+tokenise (s)", t["total_s"], p["total_s"], None, ""]]
        lines += [markdown_table(["metric", "TRL", "preftune", "preftune / TRL", "target"], rows), ""]
        others = [c for c in s if c not in ("trl", "preftune")]
        if others:
            lines += ["Other contenders (same run):", ""]
            lines += [markdown_table(["contender", "pairs/s", "x TRL", "pairs/CPU-s", "x TRL", "RSS MB", "x TRL",
                                      "pad share", "kept"],
                                     [[c, s[c]["epoch_pairs_per_s"],
                                       ratio(s[c]["epoch_pairs_per_s"], t["epoch_pairs_per_s"]),
                                       s[c]["epoch_pairs_per_cpu_s"],
                                       ratio(s[c]["epoch_pairs_per_cpu_s"], t["epoch_pairs_per_cpu_s"]),
                                       s[c]["peak_rss_mb"], ratio(s[c]["peak_rss_mb"], t["peak_rss_mb"]),
                                       s[c]["padding_share"], s[c]["num_pairs_kept"]] for c in others]), ""]
        par = res["parity"]
        lines += [f"First-step loss, same weights, the first {par['pairs']} pairs as one batch: "
                  f"preftune {par['preftune_loss']!r}"
                  + (f" (layout=padded {par['preftune_loss_padded']!r})" if "preftune_loss_padded" in par else "")
                  + f", TRL {par['trl_loss']!r}"
                  + (f", TRL on preftune's exact tensors {par.get('trl_loss_same_tensors')!r}"
                     if "trl_loss_same_tensors" in par else "")
                  + f"; |diff| = {fmt(par['abs_diff'])} ("
                  f"{'within' if par['abs_diff'] is not None and par['abs_diff'] <= 1e-4 else 'NOT within'} 1e-4); "
                  f"same token ids as TRL's own tokenisation: {par['same_token_ids']}.", ""]
        if "trl_without_eos" in res:
            lines += [f"TRL without `eos_token=\"[SEP]\"`: `{res['trl_without_eos'][:300]}`", ""]
        lines += ["Runs (in order):", ""]
        lines += [markdown_table(["run", "pairs/s", "steady", "pairs/CPU-s", "RSS MB", "pad share", "kept",
                                  "load before", "load after"],
                                 [[r["name"], r.get("epoch_pairs_per_s"), r.get("steady_pairs_per_s"),
                                   r.get("epoch_pairs_per_cpu_s"), r["peak_rss_mb"], r.get("padding_share"),
                                   r.get("num_pairs_kept"), r["load_before"].split("load average:")[-1],
                                   r["load_after"].split("load average:")[-1]]
                                  for r in res["runs"]]), ""]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setups", default="minilm,tiny")
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=-1, help="optimiser steps per run (-1 = one epoch)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--parity-pairs", type=int, default=8)
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of both contenders (0 = torch default)")
    ap.add_argument("--trl-defaults", action="store_true", help="also run TRL with its defaults (bf16, grad ckpt)")
    ap.add_argument("--skip-speed", action="store_true", help="only the loss-parity check")
    ap.add_argument("--preftune-override", action="append", help="extra preftune key=value (e.g. num_threads=2)")
    ap.add_argument("--preftune-variant", action="append",
                    help="an extra preftune contender NAME:key=value[,key=value] (e.g. drop:on_overlong=drop)")
    ap.add_argument("--work", default=os.path.join(os.environ.get("PREFTUNE_CACHE", "/tmp/ptc"), "bench"))
    ap.add_argument("--out", default=str(BENCH / "results" / "rm_vs_trl.md"))
    args = ap.parse_args()
    THREADS[0] = args.threads
    work = Path(args.work)
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    results = [run_setup(s, args, work, work / "logs") for s in args.setups.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(results, args, out, started)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
