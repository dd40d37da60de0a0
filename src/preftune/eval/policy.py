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
    bare JSON string, checked like every record (`data.prompts`: roles known, content present). A bad
    row is an error naming FILE:LINE and the field (no row is skipped silently). A prompt is returned
    as written (a string stays a string, so that the world's gold scorer can look it up)."""
    from preftune.data.prompts import read_prompt_rows

    return [r.raw if isinstance(r.raw, str) else r.prompt for r in read_prompt_rows(path, num_prompts)]


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
                    prompt_info: Sequence[dict] | None = None, generated: str | None = None, tax_samples: int = 0,
                    tax_prompts: int = 8) -> dict:
    """Judge `model` against `baseline` on `prompts`; returns (and with `out`, writes) the report dict.

    model / baseline: an alias, folder, run folder, LoRA adapter folder, or a (model, tokenizer) pair.
    judge: a Judge (see preftune.eval.judges.make_judge). KL keys are None when the two tokenizers
    differ, since the baseline cannot then score the model's tokens. prompt_info: per prompt, keys
    (id, category) copied into its sample (see read_prompt_info). With `out`, the samples are kept in
    OUT.generated.json until the report is written; `generated` judges such a file instead of generating.
    tax_samples > 0 adds `tax`, the alignment tax of eval/tax.py on the first `tax_prompts` prompts with
    that many samples each, model vs baseline.
    """
    if not prompts:
        raise ValueError("evaluate_policy: no prompts")
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model[0]).__name__
    base_name = str(baseline) if isinstance(baseline, (str, os.PathLike)) else type(baseline[0]).__name__
    setting = {"model": model_name, "baseline": base_name, "seed": seed, "max_new_tokens": max_new_tokens,
               "prompts": list(prompts)}
    loaded = _load_both(model, baseline) if generated is None or tax_samples > 0 else None
    if generated is not None:
        gen = load_generated(generated, setting)
    else:
        gen = _generate_both(loaded, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                             progress=progress)
    kept = None
    if out is not None and generated is None:
        # the samples outlive a failed judging step (a judge server down, a deadline): rerun with
        # --generated FILE to judge them without generating again
        kept = Path(str(out) + ".generated.json")
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({**setting, **gen}) + "\n")
    texts_m, texts_b = gen["model_texts"], gen["baseline_texts"]
    try:
        outcomes = [float(v) for v in judge.compare(prompts, texts_m, texts_b)]
    except ValueError as e:
        if kept is None:
            raise
        raise ValueError(f"{e}\n  the generated samples are kept in {kept}: add --generated {kept} to judge "
                         "them without generating again") from None
    if len(outcomes) != len(prompts):
        raise ValueError(f"judge {judge.name} returned {len(outcomes)} verdicts for {len(prompts)} prompts")
    report = {"model": model_name, "baseline": base_name, "judge": judge.name, "seed": seed,
              "max_new_tokens": max_new_tokens,
              **summarise_verdicts(outcomes, texts_m, texts_b, num_bootstrap=num_bootstrap, seed=seed),
              "kl_k1": gen["kl_k1"], "kl_k3": gen["kl_k3"],
              "position_bias_rate": judge.info.get("position_bias_rate"),
              "mean_tokens_model": gen["mean_tokens_model"], "mean_tokens_baseline": gen["mean_tokens_baseline"],
              "samples": sample_rows(prompts, texts_m, texts_b, outcomes, judge, prompt_info)}
    report.update(_score_guards(judge, texts_m))
    if tax_samples > 0:
        from preftune.eval.tax import alignment_tax

        pol, pol_tok, ref, ref_tok = loaded
        m = (pol, pol_tok)
        report["tax"] = alignment_tax(m, m if ref is pol else (ref, ref_tok), list(prompts[:tax_prompts]),
                                      num_samples=tax_samples, max_new_tokens=max_new_tokens, seed=seed,
                                      batch_size=batch_size, progress=progress)
    if out is not None:
        write_json(report, out, overwrite=overwrite)
    if kept is not None:
        kept.unlink(missing_ok=True)  # the report holds every sample now
    return report


def _load_both(model, baseline) -> tuple:
    """(policy, its tokenizer, baseline, its tokenizer); the same name twice (a sanity run) shares one copy."""
    pol, pol_tok = _load(model)
    ref, ref_tok = (pol, pol_tok) if isinstance(model, str) and model == baseline else _load(baseline)
    return pol, pol_tok, ref, ref_tok


def _generate_both(loaded: tuple, prompts, *, max_new_tokens, batch_size, seed, progress) -> dict:
    """Both models' samples on the prompts (same seed) and KL(model || baseline) on the model's own."""
    from preftune.eval.generate import generate, same_vocabulary

    pol, pol_tok, ref, ref_tok = loaded
    kl_ok = same_vocabulary(pol_tok, ref_tok)
    common = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "progress": progress}
    # temperature 1, no truncation: the samples must come from the model's own distribution for KL
    gen_m = generate(pol, pol_tok, prompts, ref_model=ref if kl_ok else None, desc="model", **common)
    gen_b = generate(ref, ref_tok, prompts, desc="baseline", **common)
    return {"model_texts": list(gen_m.texts), "baseline_texts": list(gen_b.texts),
            "kl_k1": metrics.kl_k1(gen_m.logps, gen_m.ref_logps) if kl_ok else None,
            "kl_k3": metrics.kl_k3(gen_m.logps, gen_m.ref_logps) if kl_ok else None,
            "mean_tokens_model": float(gen_m.num_tokens.mean()),
            "mean_tokens_baseline": float(gen_b.num_tokens.mean())}


def load_generated(path: str | os.PathLike, setting: dict) -> dict:
    """Samples kept by a run whose judging failed; refused when they were made with another model,
    baseline, seed, max_new_tokens or prompts (they would not be this evaluation's samples)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: --generated is not a readable samples file ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{p}: --generated is not a samples file (not a JSON object)")  # noqa: TRY004 (user input)
    differ = [k for k in setting if d.get(k) != setting[k]]
    if differ:
        raise ValueError(f"{p}: --generated was made with other settings ({', '.join(differ)} differ); "
                         "rerun without --generated")
    need = ("model_texts", "baseline_texts", "kl_k1", "kl_k3", "mean_tokens_model", "mean_tokens_baseline")
    missing = [k for k in need if k not in d]
    n = len(setting["prompts"])
    if missing or len(d["model_texts"]) != n or len(d["baseline_texts"]) != n:
        raise ValueError(f"{p}: --generated is incomplete (missing {missing or 'texts for every prompt'})")
    return {k: d[k] for k in need}


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
