"""Policy evaluation: the model against a baseline on a set of prompts, under a judge.

`evaluate_policy` generates one sampled response per prompt from each model (same seed), asks the
judge for a verdict per prompt, and reports win/tie/loss, the win rate with a bootstrap interval,
the length-controlled win rate, mean lengths, length bias, and KL(model || baseline) estimated on the
model's own samples (k1 and k3). N = number of prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from preftune.eval import guards, metrics

Prompt = str | list


def read_prompts(path: str | os.PathLike, num_prompts: int | None = None) -> list[Prompt]:
    """Prompts from any row file: each row an object with `prompt` (a string or chat messages) or a
    bare JSON string. A row without one is an error naming FILE:LINE (no row is skipped silently)."""
    from preftune.data.io import iter_raw

    p = Path(path)
    if not p.exists():
        raise ValueError(f"prompts file {p} does not exist")
    prompts: list[Prompt] = []
    for raw in iter_raw(p):
        if raw.error is not None:
            raise ValueError(f"{raw.where}: {raw.error}")
        row = raw.row
        value = row if isinstance(row, str) else row.get("prompt") if isinstance(row, dict) else None
        ok = (isinstance(value, str) and value.strip()) or (
            isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value))
        if not ok:
            raise ValueError(f"{raw.where}: prompt: missing or empty (need a string or a list of "
                             "{role, content} messages)")
        prompts.append(value)
        if num_prompts is not None and len(prompts) >= num_prompts:
            break
    if not prompts:
        raise ValueError(f"{p}: no prompts")
    return prompts


def read_prompt_info(path: str | os.PathLike, num_prompts: int | None = None) -> list[dict]:
    """The `id` and `category` of each prompt row that read_prompts returns (same order; a key is
    left out where the row has none), so that the stored samples can be filtered by category."""
    from preftune.data.io import iter_raw

    info: list[dict] = []
    for raw in iter_raw(Path(path)):
        row = raw.row if raw.error is None else None
        info.append({k: row[k] for k in ("id", "category") if isinstance(row, dict) and row.get(k) is not None})
        if num_prompts is not None and len(info) >= num_prompts:
            break
    return info


def summarise_verdicts(outcomes: Sequence[float], model_texts: Sequence[str], baseline_texts: Sequence[str],
                       num_bootstrap: int = 2000, seed: int = 0) -> dict:
    """The verdict statistics of a comparison (N verdicts, N texts each); lengths in characters."""
    o = np.asarray(outcomes, dtype=np.float64)
    len_m = np.array([len(t) for t in model_texts], dtype=np.float64)
    len_b = np.array([len(t) for t in baseline_texts], dtype=np.float64)
    counts = metrics.win_tie_loss(o)
    lo, hi = metrics.bootstrap_ci(o, num_resamples=num_bootstrap, seed=seed)
    return {
        **counts.to_dict(), "num_prompts": int(o.size),
        "win_rate": metrics.win_rate(o), "win_rate_ci95": [lo, hi],
        "lc_win_rate": metrics.length_controlled_win_rate(o, len_m, len_b),
        "mean_length_model": float(len_m.mean()), "mean_length_baseline": float(len_b.mean()),
        "mean_words_model": float(np.mean([len(t.split()) for t in model_texts])),
        "mean_words_baseline": float(np.mean([len(t.split()) for t in baseline_texts])),
        "length_bias": guards.length_bias_report(len_m, outcomes=o, length_diffs=len_m - len_b),
    }


def _load(m: Any):
    """A name/path is loaded; a (model, tokenizer) pair is used as given."""
    if isinstance(m, (str, os.PathLike)):
        from preftune.eval.generate import load_causal_lm

        return load_causal_lm(m)
    return m


def write_json(obj: dict, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a report; refuses to replace an existing file unless `overwrite` (the CLI's --force)."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise ValueError(f"{p} exists; pass --force to overwrite it")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2) + "\n")
    return p


def evaluate_policy(model: Any, baseline: Any, prompts: Sequence[Prompt], judge, *, max_new_tokens: int = 64,
                    batch_size: int = 8, seed: int = 0, num_bootstrap: int = 2000, out: str | None = None,
                    overwrite: bool = False, progress: bool = True,
                    prompt_info: Sequence[dict] | None = None, tax_samples: int = 0, tax_prompts: int = 8) -> dict:
    """Judge `model` against `baseline` on `prompts`; returns (and with `out`, writes) the report dict.

    model / baseline: an alias, folder, run folder, LoRA adapter folder, or a (model, tokenizer) pair.
    judge: a Judge (see preftune.eval.judges.make_judge). KL keys are None when the two tokenizers
    differ, since the baseline cannot then score the model's tokens. prompt_info: per prompt, keys
    (id, category) copied into its sample (see read_prompt_info). tax_samples > 0 adds `tax`, the alignment
    tax of eval/tax.py on the first `tax_prompts` prompts with that many samples each, model vs baseline.
    """
    from preftune.eval.generate import generate, same_vocabulary

    if not prompts:
        raise ValueError("evaluate_policy: no prompts")
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model[0]).__name__
    base_name = str(baseline) if isinstance(baseline, (str, os.PathLike)) else type(baseline[0]).__name__
    pol, pol_tok = _load(model)
    # the same name twice (a sanity run) shares one copy of the weights
    ref, ref_tok = (pol, pol_tok) if isinstance(model, str) and model == baseline else _load(baseline)
    kl_ok = same_vocabulary(pol_tok, ref_tok)
    common = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "progress": progress}
    # temperature 1, no truncation: the samples must come from the model's own distribution for KL
    gen_m = generate(pol, pol_tok, prompts, ref_model=ref if kl_ok else None, desc="model", **common)
    gen_b = generate(ref, ref_tok, prompts, desc="baseline", **common)
    outcomes = [float(v) for v in judge.compare(prompts, gen_m.texts, gen_b.texts)]
    if len(outcomes) != len(prompts):
        raise ValueError(f"judge {judge.name} returned {len(outcomes)} verdicts for {len(prompts)} prompts")
    report = {"model": model_name, "baseline": base_name, "judge": judge.name, "seed": seed,
              "max_new_tokens": max_new_tokens,
              **summarise_verdicts(outcomes, gen_m.texts, gen_b.texts, num_bootstrap=num_bootstrap,
                                   seed=seed),
              "kl_k1": metrics.kl_k1(gen_m.logps, gen_m.ref_logps) if kl_ok else None,
              "kl_k3": metrics.kl_k3(gen_m.logps, gen_m.ref_logps) if kl_ok else None,
              "position_bias_rate": judge.info.get("position_bias_rate"),
              "mean_tokens_model": float(gen_m.num_tokens.mean()),
              "mean_tokens_baseline": float(gen_b.num_tokens.mean()),
              "samples": sample_rows(prompts, gen_m.texts, gen_b.texts, outcomes, judge, prompt_info)}
    report.update(_score_guards(judge, gen_m.texts))
    if tax_samples > 0:
        from preftune.eval.tax import alignment_tax

        m = (pol, pol_tok)
        report["tax"] = alignment_tax(m, m if ref is pol else (ref, ref_tok), list(prompts[:tax_prompts]),
                                      num_samples=tax_samples, max_new_tokens=max_new_tokens, seed=seed,
                                      batch_size=batch_size, progress=progress)
    if out is not None:
        write_json(report, out, overwrite=overwrite)
    return report


def sample_rows(prompts: Sequence[Prompt], model_texts: Sequence[str], baseline_texts: Sequence[str],
                outcomes: Sequence[float], judge, prompt_info: Sequence[dict] | None = None) -> list[dict]:
    """One stored sample per prompt (what `preftune report` shows side by side): prompt, both
    responses, the verdict; `id`/`category` from prompt_info; for scoring judges each side's score
    (score_model, score_baseline); for the gold judge each side's per-attribute gold scores."""
    last = getattr(judge, "last_compare", None) or {}
    scores = (last["scores_a"], last["scores_b"]) if "scores_a" in last else None
    gold_score = None
    if getattr(judge, "name", "") == "gold":
        from preftune.eval.judges import gold_score_fn, prompt_text

        gold_score = gold_score_fn()
    rows = []
    for i, (p, a, b, v) in enumerate(zip(prompts, model_texts, baseline_texts, outcomes)):
        row = {**(prompt_info[i] if prompt_info is not None and i < len(prompt_info) else {}),
               "prompt": p, "model": a, "baseline": b, "verdict": v}
        if scores is not None:
            row["score_model"], row["score_baseline"] = float(scores[0][i]), float(scores[1][i])
        if gold_score is not None:
            row["gold_model"], row["gold_baseline"] = (
                {k: x for k, x in gold_score(prompt_text(p), t).items() if k != "checks"} for t in (a, b))
        rows.append(row)
    return rows


def _score_guards(judge, model_texts: Sequence[str]) -> dict:
    """For scoring judges (gold, rm): mean scores, the reward-length correlation of the model's
    responses, and (for ensembles) the responses whose reward the members disagree on."""
    last = getattr(judge, "last_compare", None) or {}
    if "scores_a" not in last:
        return {}
    lengths = np.array([len(t) for t in model_texts], dtype=np.float64)
    out = {"mean_score_model": float(np.mean(last["scores_a"])),
           "mean_score_baseline": float(np.mean(last["scores_b"])),
           "reward_length_bias": guards.length_bias_report(lengths, rewards=last["scores_a"])}
    if last.get("std_a") is not None:
        out["uncertain_responses"] = guards.uncertain_responses(last["std_a"])
    return out
