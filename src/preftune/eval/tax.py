"""The alignment tax: what tuning may cost in diversity and in capabilities it did not target.

Diversity, over several samples of one prompt (then averaged over prompts):
- distinct-n (Li et al., 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models"):
  distinct n-grams / all n-grams of the samples, words split on whitespace;
- self-BLEU (Zhu et al., 2018, "Texygen"): the mean BLEU of each sample against the others as references
  (nltk's sentence_bleu with smoothing method 1; n-gram orders up to min(4, the shortest sample's length));
  1 = the samples are copies of each other;
- mean token entropy: the mean over generated tokens of the entropy (nats) of the next-token distribution.
Capability retention, on checks the tuning did not target:
- arithmetic accuracy on the tool-use world's arithmetic tasks answered WITHOUT tools (the number in the
  answer must equal the gold value);
- perplexity on a fixed reference text shipped with the package (data/assets/reference_text.txt).
`alignment_tax` measures both for a model and a baseline; `delta` = model - baseline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REFERENCE_TEXT = Path(__file__).resolve().parent.parent / "data" / "assets" / "reference_text.txt"


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / n-grams over all `texts` (0.0 when they hold no n-gram)."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean BLEU of each text against all the others (needs at least 2 texts; empty texts are left out)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    toks = [t.split() for t in texts if t.split()]
    if len(toks) < 2:
        raise ValueError(f"self-BLEU needs at least 2 non-empty samples, got {len(toks)}")
    order = max(1, min(max_n, min(len(t) for t in toks)))
    weights = tuple([1.0 / order] * order)
    smooth = SmoothingFunction().method1
    scores = [sentence_bleu(toks[:i] + toks[i + 1:], hyp, weights=weights, smoothing_function=smooth)
              for i, hyp in enumerate(toks)]
    return float(sum(scores) / len(scores))


def mean_token_entropy(logits, mask) -> float:
    """Mean entropy (nats) of softmax(logits) over the positions where mask is true.
    logits (B, L, V), mask (B, L) bool."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    ent = -(logp.exp() * logp).sum(-1)  # (B, L)
    m = mask.bool()
    return float(ent[m].mean()) if bool(m.any()) else 0.0


def diversity(samples: Sequence[Sequence[str]]) -> dict:
    """distinct-1/2 and self-BLEU of each prompt's samples, averaged over prompts."""
    if not samples or any(len(s) < 2 for s in samples):
        raise ValueError("diversity needs at least 2 samples for every prompt")
    k = len(samples)
    return {"distinct_1": sum(distinct_n(s, 1) for s in samples) / k,
            "distinct_2": sum(distinct_n(s, 2) for s in samples) / k,
            "self_bleu": sum(self_bleu(s) for s in samples) / k}


def arithmetic_tasks(n: int, seed: int = 0) -> list:
    """n arithmetic tasks of the tool-use world's test split."""
    from preftune.world.agent.tasks import sample_task

    rng = random.Random(seed * 1_000_003 + 29)
    return [sample_task(rng, "test", "arithmetic") for _ in range(n)]


def arithmetic_accuracy(tasks: Sequence[Any], answers: Sequence[str]) -> float:
    """Share of answers holding the task's gold number."""
    from preftune.world.agent.gold import answer_correct

    if len(tasks) != len(answers) or not tasks:
        raise ValueError(f"{len(answers)} answers for {len(tasks)} tasks")
    return sum(answer_correct(t, a) for t, a in zip(tasks, answers)) / len(tasks)


def reference_text() -> str:
    return REFERENCE_TEXT.read_text(encoding="utf-8")


def perplexity(model, tokenizer, text: str, max_length: int = 512) -> float:
    """exp(mean next-token NLL) of `text`, in windows of `max_length` tokens (each window starts fresh;
    its first token is conditioned on the BOS when the tokenizer has one, else it is not scored)."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    step = max_length - len(bos)
    for start in range(0, len(ids), step):
        window = torch.tensor([bos + ids[start:start + step]], device=device)
        with torch.no_grad():
            logits = model(input_ids=window).logits[0, :-1].float()  # (L - 1, V)
        logp = torch.log_softmax(logits, -1).gather(-1, window[0, 1:].unsqueeze(-1)).squeeze(-1)
        nll -= float(logp.sum())
        count += logp.numel()
    if count == 0:
        raise ValueError("perplexity: the text has too few tokens")
    return math.exp(nll / count)


def _sample_entropy(model, tokenizer, prompts: Sequence, texts: Sequence[str]) -> float:
    """Mean token entropy over the samples: prompt and sample re-tokenised (as generate rendered them)."""
    import torch

    from preftune.eval.generate import render_prompt

    device = next(model.parameters()).device
    total, count = 0.0, 0
    for p, t in zip(prompts, texts):
        p_ids = tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if not t_ids or not p_ids:
            continue
        ids = torch.tensor([p_ids + t_ids], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[:, len(p_ids) - 1:-1]  # (1, L, V): predicting the sample
        total += mean_token_entropy(logits, torch.ones(logits.shape[:2], dtype=torch.bool)) * len(t_ids)
        count += len(t_ids)
    return total / count if count else 0.0


def measure(model, tokenizer, prompts: Sequence, *, num_samples: int = 4, max_new_tokens: int = 32,
            num_arithmetic: int = 8, seed: int = 0, batch_size: int = 8, progress: bool = False) -> dict:
    """Every tax metric of one model (the samples of prompt i with seeds seed, seed + 1, ...)."""
    from preftune.eval.generate import generate

    if num_samples < 2:
        raise ValueError(f"tax: num_samples must be >= 2 (diversity compares samples), got {num_samples}")
    kw = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "progress": progress}
    runs = [generate(model, tokenizer, list(prompts), seed=seed + 1000 * k, desc=f"tax sample {k}", **kw).texts
            for k in range(num_samples)]
    samples = [[run[i] for run in runs] for i in range(len(prompts))]
    flat_p = [p for p in prompts for _ in range(num_samples)]
    flat_t = [t for s in samples for t in s]
    tasks = arithmetic_tasks(num_arithmetic, seed) if num_arithmetic > 0 else []
    answers = generate(model, tokenizer, [t.prompt for t in tasks], do_sample=False, desc="tax arithmetic",
                       **kw).texts if tasks else []
    return {**diversity(samples), "mean_token_entropy": _sample_entropy(model, tokenizer, flat_p, flat_t),
            "arithmetic_accuracy": arithmetic_accuracy(tasks, answers) if tasks else None,
            "reference_perplexity": perplexity(model, tokenizer, reference_text())}


def alignment_tax(model: tuple, baseline: tuple, prompts: Sequence, **kw) -> dict:
    """{"model", "baseline", "delta" (model - baseline)} of `measure`; model/baseline are (model, tokenizer)."""
    m = measure(*model, prompts, **kw)
    b = m if baseline is model else measure(*baseline, prompts, **kw)
    delta = {k: (m[k] - b[k]) if m[k] is not None and b[k] is not None else None for k in m}
    return {"model": m, "baseline": b, "delta": delta,
            "settings": {k: kw.get(k) for k in ("num_samples", "max_new_tokens", "num_arithmetic", "seed")}}
