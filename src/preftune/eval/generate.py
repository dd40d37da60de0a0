"""Batched, seeded generation from a causal LM, with per-sequence log-probs for KL estimates.

Prompts are strings or chat conversations (lists of {"role", "content"}); the tokenizer's chat
template is applied when it has one. Prompts are left-padded so every row's generation starts at the
same column. B = prompts in a batch, T = prompt + generated tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Generation:
    """N generations. `logps` (N,) / `token_logps` (list of (L_i,)) are under the sampling model at
    temperature 1; `ref_logps` (N,) under the second model, for KL(model || ref). None when not asked."""
    texts: list[str]
    num_tokens: np.ndarray                     # (N,) generated tokens, eos included
    logps: np.ndarray | None = None            # (N,)
    ref_logps: np.ndarray | None = None        # (N,)
    token_logps: list[np.ndarray] | None = field(default=None, repr=False)


def resolve_model_dir(name: str | os.PathLike) -> str:
    """A run folder with a `final/` subfolder means its final model; anything else is left as given."""
    p = Path(str(name))
    if p.is_dir() and (p / "final").is_dir():
        return str(p / "final")
    return str(name)


def load_causal_lm(name: str | os.PathLike, dtype: str = "float32"):
    """(model, tokenizer) from an alias, a model folder, a run folder (-> RUN/final) or a LoRA adapter
    folder (adapter_config.json: the adapter is loaded with peft on its base model). Model in eval mode."""
    from preftune.models import load_policy, load_tokenizer, quiet_peft

    path = resolve_model_dir(name)
    adapter_cfg = Path(path) / "adapter_config.json"
    if adapter_cfg.is_file():
        try:
            from peft import PeftModel
        except ImportError as e:
            raise ValueError(f"{path} is a LoRA adapter; loading it needs peft: pip install peft") from e
        base = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{adapter_cfg}: base_model_name_or_path is missing")
        with quiet_peft():
            model = PeftModel.from_pretrained(load_policy(base, dtype=dtype), path)
        has_tok = any((Path(path) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
        tok = load_tokenizer(path if has_tok else base)
    else:
        if Path(path).is_dir() and not (Path(path) / "config.json").exists():
            raise ValueError(f"{path}: not a model folder (no config.json) and no final/ inside")
        try:
            model = load_policy(path, dtype=dtype)
        except OSError as e:
            raise ValueError(f"cannot load model {name!r}: {e}") from e
        tok = load_tokenizer(path)
    model.eval()
    return model, tok


def render_prompt(tokenizer, prompt: str | list[dict]) -> str:
    """Prompt text ready for generation: the chat template with the assistant turn opened, if any."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    from preftune.data.records import render_text

    return render_text(messages) + "\n"


def _completion_logps(model, input_ids, attention_mask, prompt_len: int, gen_mask):
    """Per-token log-probs (B, L) of the generated tokens input_ids[:, prompt_len:], zero past eos.

    input_ids/attention_mask (B, T), T = prompt_len + L; gen_mask (B, L). Only the L predicting
    positions go through log_softmax, so the prompt never costs a (B, T, V) copy. position_ids
    follow the attention mask, as generate() used them under left padding.
    """
    import torch

    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, prompt_len - 1:-1].float()  # (B, L, V): position t predicts token t + 1
    targets = input_ids[:, prompt_len:]  # (B, L)
    tok_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return tok_logps * gen_mask


def generate(model, tokenizer, prompts: Sequence[str | list[dict]], *, max_new_tokens: int = 64,
             batch_size: int = 8, do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
             seed: int = 0, return_logprobs: bool = False, ref_model: Any = None,
             progress: bool = True, desc: str = "generate") -> Generation:
    """Generate one response per prompt (N prompts -> N texts), in prompt order.

    Seeded per batch (seed + batch index), so the same call gives the same texts. For KL estimates
    sample with temperature 1 and top_p 1: k1/k3 assume the samples come from the model's own
    distribution, which any other temperature or truncation changes. `ref_model` must share the
    tokenizer (its log-probs are read on the same token ids).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    texts: list[str] = []
    num_tokens: list[int] = []
    logps: list[float] = []
    ref_logps: list[float] = []
    token_logps: list[np.ndarray] = []
    # A fresh config, not the model's generation_config: a shipped repetition penalty or top_k would
    # silently change the sampling distribution that the KL estimates assume.
    gen_config = GenerationConfig(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                  eos_token_id=eos_id, bos_token_id=tokenizer.bos_token_id)
    if do_sample:
        gen_config.update(temperature=temperature, top_p=top_p, top_k=0)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        starts = range(0, len(prompts), batch_size)
        for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, unit="batch")):
            batch = [render_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed + b)
            with torch.no_grad():
                out = model.generate(**enc, generation_config=gen_config)  # (B, T)
            prompt_len = enc["input_ids"].shape[1]
            new = out[:, prompt_len:]  # (B, L)
            # completion = generated tokens up to and including the first eos; the rest is padding
            is_eos = new == eos_id if eos_id is not None else torch.zeros_like(new, dtype=torch.bool)
            after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
            gen_mask = (~after_eos).long()  # (B, L)
            for row, m in zip(new, gen_mask):
                n = int(m.sum())
                num_tokens.append(n)
                texts.append(tokenizer.decode(row[:n], skip_special_tokens=True).strip())
            if return_logprobs or ref_model is not None:
                attn = torch.cat([enc["attention_mask"], gen_mask], dim=1)  # (B, T)
                tl = _completion_logps(model, out, attn, prompt_len, gen_mask)  # (B, L)
                logps.extend(tl.sum(-1).tolist())
                token_logps.extend(row[m.bool()].cpu().numpy() for row, m in zip(tl, gen_mask))
                if ref_model is not None:
                    dev = next(ref_model.parameters()).device
                    rl = _completion_logps(ref_model, out.to(dev), attn.to(dev), prompt_len, gen_mask.to(dev))
                    ref_logps.extend(rl.sum(-1).tolist())
    finally:
        tokenizer.padding_side = old_side
    want = return_logprobs or ref_model is not None
    return Generation(texts=texts, num_tokens=np.asarray(num_tokens),
                      logps=np.asarray(logps) if want else None,
                      ref_logps=np.asarray(ref_logps) if ref_model is not None else None,
                      token_logps=token_logps if want else None)


def same_vocabulary(tok_a, tok_b) -> bool:
    """True when two tokenizers map every token to the same id (so one model can score the other's tokens)."""
    return tok_a is tok_b or tok_a.get_vocab() == tok_b.get_vocab()
