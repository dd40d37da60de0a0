"""Rollout speed: preftune's HFRolloutEngine (each prompt prefilled once, its KV cache repeated G
times, finished rows dropped from the cache) against transformers' `model.generate(
num_return_sequences=G)` (each prompt encoded G times, finished rows kept until the batch ends).

Same process, same model, same prompts (the synthetic world's, through the chat template), same
sampling (temperature 1, no top-k / top-p), same stop ids (the model's EOS), 1 torch thread;
contenders interleaved (order alternating per repeat) after one untimed warm-up call each.
tokens/s = completion tokens generated (up to and including the stop token) / wall seconds;
the two draw different random samples, so completion lengths differ when a model can stop.

    PREFTUNE_CACHE=/tmp/ptc .venv/bin/python benchmarks/rollout_prefix.py --force
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, machine, markdown_table, median, uptime, venv_versions

# (model, prompts P, samples per prompt G, max new tokens)
SETUPS = {"tiny-llama": (8, 8, 64), "smollm2-135m": (4, 8, 64)}


def world_prompts(tok, n: int) -> list[list[int]]:
    from preftune.world.generate import generate_world

    rows = generate_world(n, seed=0, num_test_pairs=0).train[:n]
    return [list(tok.apply_chat_template(r.prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
            for r in rows]


def run_preftune(engine, prompts, G, max_new, stops, seed):
    out = engine.generate(prompts, G, max_new, temperature=1.0, top_p=1.0, top_k=0, seed=seed, stop_ids=stops)
    return int(out.completion_lengths.sum()), int(out.truncated.sum())


def run_generate(model, tok, prompts, G, max_new, stops, seed):
    import torch

    torch.manual_seed(seed)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                         num_return_sequences=G, max_new_tokens=max_new, eos_token_id=sorted(stops),
                         pad_token_id=tok.pad_token_id)[:, width:]
    tokens, truncated = 0, 0
    for row in out.tolist():
        stop_at = next((i for i, t in enumerate(row) if t in stops), None)
        tokens += len(row) if stop_at is None else stop_at + 1
        truncated += stop_at is None and len(row) == max_new
    return tokens, truncated


def with_multinomial(fn, *args):
    """Ablation: the engine with torch.multinomial as its sampler (what generate uses) instead of its own."""
    import torch

    from preftune.models import rollout

    def multinomial_draw(filtered, peak, generator):
        weights = torch.exp(filtered - peak)
        tokens = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
        return tokens, weights.sum(-1, dtype=torch.float64)

    real = rollout._draw
    rollout._draw = multinomial_draw
    try:
        return fn(*args)
    finally:
        rollout._draw = real


def bench_model(name: str, repeats: int) -> dict:
    import torch

    from preftune.models import load_policy, load_tokenizer
    from preftune.models.rollout import HFRolloutEngine

    P, G, max_new = SETUPS[name]
    tok, model = load_tokenizer(name), load_policy(name).eval()
    prompts = world_prompts(tok, P)
    engine = HFRolloutEngine(model, tok)
    stops = engine.default_stop_ids
    repeated = [p for p in prompts for _ in range(G)]  # each prompt G times, one sample each
    calls = {"preftune": lambda s: run_preftune(engine, prompts, G, max_new, stops, s),
             "preftune-no-prefix": lambda s: run_preftune(engine, repeated, 1, max_new, stops, s),
             "preftune-multinomial": lambda s: with_multinomial(run_preftune, engine, prompts, G, max_new, stops, s),
             "hf-generate": lambda s: run_generate(model, tok, prompts, G, max_new, stops, s)}
    runs = {k: [] for k in calls}
    with torch.no_grad():
        for k, f in calls.items():
            f(10_000)  # warm-up, untimed
        for rep in range(repeats):
            order = list(calls) if rep % 2 == 0 else list(reversed(calls))
            for k in order:
                load = uptime()
                t0, c0 = time.perf_counter(), time.process_time()
                tokens, truncated = calls[k](rep)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                runs[k].append({"rep": rep, "wall_s": wall, "cpu_s": cpu, "tokens": tokens, "truncated": truncated,
                                "load": load})
                print(f"{name} {k} rep {rep}: {tokens} tokens in {wall:.2f} s ({tokens / wall:.1f}/s)", flush=True)
    return {"model": name, "prompts": P, "samples": G, "max_new_tokens": max_new,
            "prompt_tokens": [len(p) for p in prompts], "stop_ids": sorted(stops), "runs": runs}


def report(results: list[dict], command: str) -> str:
    versions = venv_versions(sys.executable)
    lines = ["# Rollouts: prompt prefilled once per group vs `generate(num_return_sequences=G)`", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.",
             "The machine is shared with other engineers: absolute numbers are noisy; the ratio (same process,",
             "interleaved) is what to read. 1 torch thread. Load (`uptime`) before each timed call is listed below.",
             "", f"- versions: `{json.dumps(versions)}`", "", "Command:", "", "```", command, "```", "",
             "Sampling: temperature 1, top_k 0, top_p 1, stop ids = the model's EOS; prompts = the synthetic world's",
             "first P prompts through the chat template. tokens/s = completion tokens (incl. the stop token) per",
             "wall second, median over repeats; `x generate` = a contender's tokens/s / generate's.", "",
             "Contenders: `preftune` = HFRolloutEngine (prompt prefilled once per group, finished rows dropped,",
             "two-level inverse-CDF sampler); `preftune-no-prefix` = the same engine given each prompt G times with",
             "one sample each (no prefix sharing); `preftune-multinomial` = the engine with torch.multinomial as its",
             "sampler (generate's); `hf-generate` = `model.generate(do_sample=True, num_return_sequences=G)`.", ""]
    rows = []
    for res in results:
        for k, rs in res["runs"].items():
            tps = median([r["tokens"] / r["wall_s"] for r in rs])
            rows.append([res["model"], f"{res['prompts']}x{res['samples']}", res["max_new_tokens"],
                         f"{min(res['prompt_tokens'])}-{max(res['prompt_tokens'])}", k,
                         median([r["tokens"] for r in rs]), median([r["wall_s"] for r in rs]), tps,
                         median([r["tokens"] / r["cpu_s"] for r in rs]), median([r["truncated"] for r in rs])])
        theirs = median([r["tokens"] / r["wall_s"] for r in res["runs"]["hf-generate"]])
        for row in rows[-len(res["runs"]):]:
            row.append(row[7] / theirs)
    lines.append(markdown_table(["model", "P x G", "max new", "prompt tokens", "contender", "tokens", "wall s",
                                 "tokens/s", "tokens/CPU-s", "truncated", "x generate"], rows))
    lines += ["", "Attribution (median tokens/s ratios, same run):", ""]
    for res in results:
        tps = {k: median([r["tokens"] / r["wall_s"] for r in rs]) for k, rs in res["runs"].items()}
        lines.append(f"- {res['model']}: prefix sharing (preftune / preftune-no-prefix) "
                     f"{tps['preftune'] / tps['preftune-no-prefix']:.2f}x; "
                     f"sampler (preftune / preftune-multinomial) {tps['preftune'] / tps['preftune-multinomial']:.2f}x; "
                     f"all (preftune / hf-generate) {tps['preftune'] / tps['hf-generate']:.2f}x")
    lines += ["", "Runs:", ""]
    run_rows = [[res["model"], k, r["rep"], r["tokens"], r["wall_s"], r["cpu_s"], r["truncated"],
                 r["load"].split("load average:")[-1].strip()]
                for res in results for k, rs in res["runs"].items() for r in rs]
    lines.append(markdown_table(["model", "contender", "repeat", "tokens", "wall s", "CPU s", "truncated",
                                 "load before"], run_rows))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny-llama,smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(BENCH / "results" / "rollout_prefix.md"))
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists() and not args.force:
        sys.exit(f"{out} exists: pass --force to overwrite it")
    import torch

    torch.set_num_threads(args.threads)
    unknown = [m for m in args.models.split(",") if m not in SETUPS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; known: {', '.join(SETUPS)}")
    results = [bench_model(m, args.repeats) for m in args.models.split(",")]
    command = (f"PREFTUNE_CACHE={os.environ.get('PREFTUNE_CACHE', '~/.cache/preftune')} {sys.executable} "
               f"benchmarks/rollout_prefix.py " + " ".join(sys.argv[1:]))
    out.write_text(report(results, command))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
