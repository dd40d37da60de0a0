"""The reference of a DPO run: a frozen copy, the adapter-disabled base (LoRA), or reference
log-probs computed once and kept on disk (`reference=cache`).

The reference model never changes during DPO, so its log-probs of every pair are a pure function of
(reference weights, token ids). The cache key hashes exactly those: the weights tensor by tensor, and
the tokenised pairs. The token ids are the product of the data, the tokenizer (vocabulary and chat
template) and the tokenisation settings (max_length, truncation), so a change to any of the three
changes the key, including changes no list of settings would name (an edited chat template). The
weights' dtype is part of their bytes; the layout is not part of the key because every layout gives
the same log-probs (tested to 1e-5 in tests/unit/models/test_forward.py).

A cache file holds, per pair (in tokenised order): summed chosen and rejected log-probs, and the
chosen per-token log-probs (for the KL-to-reference metric). Shapes: P pairs, N chosen tokens in all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from preftune.batching import SequenceBatch, length_grouped_batches, pair_length, to_device
from preftune.models.forward import pair_logps, sequence_logps
from preftune.ops.logprobs import pad_by_segment

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RefPairLogps:
    """The reference's log-probs of a batch of B pairs."""
    chosen_logps: torch.Tensor    # (B,) summed over chosen tokens
    rejected_logps: torch.Tensor  # (B,)
    chosen_tokens: torch.Tensor   # (B, L) chosen per-token log-probs, zero-padded (the KL metric)
    chosen_mask: torch.Tensor     # (B, L) bool


@dataclass(frozen=True)
class RefSequenceLogps:
    """The reference's log-probs of a batch of B single sequences (KTO rows)."""
    logps: torch.Tensor   # (B,) summed over completion tokens
    tokens: torch.Tensor  # (B, L) per-token log-probs, zero-padded
    mask: torch.Tensor    # (B, L) bool


@dataclass
class RefLogps:
    """Reference log-probs of P pairs, in the order of the tokenised list."""
    chosen_logps: Any     # (P,) float32
    rejected_logps: Any   # (P,) float32
    chosen_tokens: Any    # (N,) float32, chosen per-token log-probs, pair after pair
    offsets: Any          # (P + 1,) long, pair p's tokens are chosen_tokens[offsets[p]:offsets[p + 1]]

    def take(self, positions: Sequence[int], device=None) -> RefPairLogps:
        """The rows of a batch (positions in the tokenised list), on `device`."""
        pos = torch.as_tensor(list(positions), dtype=torch.long)
        starts, ends = self.offsets[pos], self.offsets[pos + 1]
        width = int((ends - starts).max()) if len(pos) else 0
        tokens = torch.zeros((len(pos), width), dtype=torch.float32)
        mask = torch.zeros((len(pos), width), dtype=torch.bool)
        for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
            tokens[i, :e - s] = self.chosen_tokens[s:e]
            mask[i, :e - s] = True
        out = RefPairLogps(self.chosen_logps[pos], self.rejected_logps[pos], tokens, mask)
        return out if device is None else to_device(out, device)


def weights_fingerprint(model) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tokens_fingerprint(items: Sequence[Any]) -> str:
    """sha256 of the tokenised pairs (prompt, chosen, rejected ids of each, in order)."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.prompt_ids, it.chosen_ids, it.rejected_ids]).encode())
        h.update(b"\n")
    return h.hexdigest()


def cache_key(weights_sha: str, items: Sequence[Any], extra: dict | None = None) -> str:
    """The file name stem: hash of the weights' hash, the tokens' hash and any extra settings."""
    blob = json.dumps({"v": FORMAT_VERSION, "weights": weights_sha, "tokens": tokens_fingerprint(items),
                       "extra": extra or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    from preftune.models import cache_dir

    return cache_dir() / "refcache"


def compute_ref_logps(model, items: Sequence[Any], collate: Callable[[list], Any], batch_size: int,
                      chunk_size: int, device=None) -> RefLogps:
    """Run the reference over every pair once (no gradients), batches sorted by length."""
    P = len(items)
    chosen = torch.zeros(P, dtype=torch.float32)
    rejected = torch.zeros(P, dtype=torch.float32)
    per_pair: list[torch.Tensor | None] = [None] * P
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for rows in length_grouped_batches([pair_length(it) for it in items], batch_size, seed=0, shuffle=False):
            batch = to_device(collate([items[i] for i in rows]), device or "cpu")
            out = pair_logps(model, batch, chunk_size=chunk_size, return_tokens=True)
            tok, mask = out.token_matrix("chosen")
            for j, i in enumerate(rows):
                chosen[i], rejected[i] = out.chosen_logps[j].cpu(), out.rejected_logps[j].cpu()
                per_pair[i] = tok[j][mask[j]].float().cpu()
    model.train(was_training)
    lens = torch.tensor([len(t) for t in per_pair], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
    return RefLogps(chosen, rejected, torch.cat(per_pair) if P else torch.zeros(0), offsets)


def save_ref_logps(ref: RefLogps, path: Path) -> None:
    """Atomic write (a concurrent reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".refcache-", suffix=".pt", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        torch.save({"version": FORMAT_VERSION, "chosen_logps": ref.chosen_logps,
                    "rejected_logps": ref.rejected_logps, "chosen_tokens": ref.chosen_tokens,
                    "offsets": ref.offsets}, f)
    os.replace(tmp, path)


def load_ref_logps(path: Path) -> RefLogps | None:
    """The cached log-probs, or None when the file is missing or from another format version."""
    if not path.exists():
        return None
    d = torch.load(path, map_location="cpu", weights_only=True)
    if d.get("version") != FORMAT_VERSION:
        return None
    return RefLogps(d["chosen_logps"], d["rejected_logps"], d["chosen_tokens"], d["offsets"])


def cached_ref_logps(cache_dir: str | Path, key: str, compute: Callable[[], RefLogps],
                     write: bool = True) -> tuple[RefLogps, bool, Path]:
    """(log-probs, hit, file): load `key` from `cache_dir`, else compute (and save when `write`)."""
    path = Path(cache_dir) / f"{key}.pt"
    ref = load_ref_logps(path)
    if ref is not None:
        return ref, True, path
    ref = compute()
    if write:
        save_ref_logps(ref, path)
    return ref, False, path


# --------------------------------------------------------------------------- the reference a run uses

@dataclass
class Reference:
    mode: str                   # model | adapter | cache | none
    model: Any = None           # the frozen copy (mode model)
    caches: dict | None = None  # split -> RefLogps (mode cache)


def load_reference(cfg, policy, splits: dict, collate, accelerator) -> tuple[Reference, dict]:
    """The frozen copy, or the cached log-probs of each split (computed on a miss by the main process,
    before LoRA is applied: the reference is the starting weights). Returns (reference, cache report)."""
    from preftune.models import load_policy

    mode = cfg.resolved_reference()
    if mode not in ("model", "cache"):
        return Reference(mode), {}
    ref_model = load_policy(cfg.ref_model, dtype=cfg.dtype) if cfg.ref_model else policy
    if mode == "model":
        if ref_model is policy:  # an independent frozen copy of the starting weights
            ref_model = load_policy(cfg.model, dtype=cfg.dtype)
        ref_model.to(accelerator.device).eval().requires_grad_(False)  # never wrapped in DDP: no gradients
        return Reference("model", model=ref_model), {}
    cache_dir = Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else default_cache_dir()
    weights = weights_fingerprint(ref_model)
    # the token ids already carry data x tokenizer x settings; the settings are named too, for clarity
    settings = {"max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length,
                "on_overlong": cfg.on_overlong, "ref_model": cfg.ref_model or cfg.model, "train_on": cfg.train_on}
    caches, report = {}, {}
    for split, data in splits.items():
        key = cache_key(weights, data.items, settings)
        path, hit = cache_dir / f"{key}.pt", True
        if accelerator.is_main_process:
            ref_model.to(accelerator.device)
            _, hit, path = cached_ref_logps(cache_dir, key, lambda d=data: compute_ref_logps(
                ref_model, d.items, collate, cfg.batch_size, cfg.chunk_size, accelerator.device))
        accelerator.wait_for_everyone()
        caches[split] = load_ref_logps(path)
        assert caches[split] is not None, f"reference cache {path} was not written"
        report[split] = {"key": key, "file": str(path), "hit": bool(hit), "num_pairs": len(data.items)}
    return Reference("cache", caches=caches), report


def reference_logps(ref: Reference, policy_model, batch, rows: list[int], split: str, chunk_size: int,
                    device) -> RefPairLogps | RefSequenceLogps | None:
    """The reference's log-probs of a batch: RefPairLogps for pairs, RefSequenceLogps for KTO rows
    (a SequenceBatch), None without a reference."""
    if ref.mode == "none":
        return None
    if ref.mode == "cache":
        return ref.caches[split].take(rows, device)
    model = ref.model if ref.mode == "model" else policy_model
    off = policy_model.disable_adapter() if ref.mode == "adapter" else contextlib.nullcontext()
    with torch.no_grad(), off:
        if isinstance(batch, SequenceBatch):
            out = sequence_logps(model, batch, chunk_size=chunk_size, return_tokens=True)
            tok, mask = pad_by_segment(out.token_logps, out.token_segment, batch.num_sequences)
            return RefSequenceLogps(out.logps, tok, mask)
        out = pair_logps(model, batch, chunk_size=chunk_size, return_tokens=True)
    tok, mask = out.token_matrix("chosen")
    return RefPairLogps(out.chosen_logps, out.rejected_logps, tok, mask)
