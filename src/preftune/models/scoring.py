"""Score responses with a trained reward model (or ensemble): `load_scorer(RUN).score(...)`.

`load_scorer(RUN)` reads RUN/final/preftune_rm.json (heads, head weights, ensemble, encoder/decoder,
max_length) written by `preftune train rm`; a plain model folder or alias is scored as a one-head RM.
`RewardScorer.score(prompts, responses)` returns numpy arrays (N = responses):
  "reward"  (N,)   scalarised reward (head weights), mean over ensemble members
  "std"     (N,)   std over ensemble members (population), None for a single model
  "heads"   {name: (N,)} per-head rewards (ensemble mean)
  "members" (M, N) scalarised reward of each member
  "num_truncated"  responses cut to max_length (counted, never silent)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INFO_FILE = "preftune_rm.json"


def _conv(value: Any, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return [value]
    return list(value)


class RewardScorer:
    """One or several reward models sharing a tokenizer; see the module docstring for `score`'s output."""

    def __init__(self, models: list, tokenizer, info: dict):
        import torch

        self.models, self.tokenizer, self.info = models, tokenizer, info
        self.heads: list[str] = info["heads"]
        self.head_weights = torch.tensor(info["head_weights"], dtype=torch.float32)
        self.num_ensemble_heads = int(info.get("ensemble", {}).get("num_heads", 1))
        self.encoder = bool(info["encoder"])
        from preftune.models.limits import clamp_max_length

        for m in models:
            m.eval()
            info["max_length"], note = clamp_max_length(int(info["max_length"]), m.config)
            if note:
                import sys

                print(f"preftune: warning: scoring: {note}", file=sys.stderr, flush=True)

    @property
    def is_ensemble(self) -> bool:
        return len(self.models) * self.num_ensemble_heads > 1

    def columns(self, prompts: list, responses: list, batch_size: int = 16):
        """(M, N, 1 + A) raw head scores of every member (ensemble heads count as members), and #truncated."""
        import torch

        from preftune.batching import collate_sequences_padded
        from preftune.models.forward import sequence_rewards
        from preftune.tokenize import tokenize_completions

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
        items, report = tokenize_completions([_conv(p, "user") for p in prompts],
                                             [_conv(r, "assistant") for r in responses], self.tokenizer,
                                             self.info["max_length"], self.info.get("max_prompt_length"),
                                             "truncate", encoder=self.encoder)
        per = len(self.heads)
        E = self.num_ensemble_heads
        out = torch.zeros(len(self.models) * E, len(items), per)
        order = sorted(range(len(items)), key=lambda i: -(len(items[i].prompt_ids) + len(items[i].completion_ids)))
        from tqdm.auto import tqdm

        starts = range(0, len(order), batch_size)
        with torch.no_grad():
            for s in tqdm(starts, desc="score", unit="batch", leave=False, disable=len(starts) < 2):
                idx = order[s:s + batch_size]
                batch = collate_sequences_padded([items[i] for i in idx], self.tokenizer.pad_token_id, "right",
                                                 self.encoder)
                for k, model in enumerate(self.models):
                    scores = sequence_rewards(model, batch).float()  # (B, E * per)
                    out[k * E:(k + 1) * E, idx] = scores.reshape(len(idx), E, per).transpose(0, 1)
        return out, report.num_truncated

    def score(self, prompts: list, responses: list, batch_size: int = 16) -> dict:
        import numpy as np

        from preftune.losses.pairwise import ensemble_stats, scalarize

        cols, num_truncated = self.columns(prompts, responses, batch_size)
        members = scalarize(cols, self.head_weights)  # (M, N)
        mean, std = ensemble_stats(members)
        heads = {h: cols[:, :, j].mean(0).numpy().astype(np.float64) for j, h in enumerate(self.heads)}
        return {"reward": mean.numpy().astype(np.float64),
                "std": std.numpy().astype(np.float64) if self.is_ensemble else None,
                "heads": heads, "members": members.numpy().astype(np.float64), "num_truncated": num_truncated}


def resolve_final(run_dir_or_model: str) -> Path | None:
    """The folder holding preftune_rm.json (RUN/final or the folder itself), or None for a plain model."""
    p = Path(run_dir_or_model)
    for cand in (p / "final", p):
        if (cand / INFO_FILE).exists():
            return cand
    return None


def load_scorer(run_dir_or_model: str, dtype: str = "float32") -> RewardScorer:
    """A RewardScorer for a run folder (RUN or RUN/final), a member's final folder, or a plain model."""
    from preftune.models import is_encoder, load_reward_model, load_tokenizer

    final = resolve_final(str(run_dir_or_model))
    if final is None:
        p = Path(run_dir_or_model)
        if p.exists() and not (p / "config.json").exists():
            raise ValueError(f"{p} holds neither a trained reward model ({p}/final/{INFO_FILE}) nor a model folder")
        tok = load_tokenizer(str(run_dir_or_model))
        model = load_reward_model(str(run_dir_or_model), dtype=dtype)
        info = {"heads": ["overall"], "head_weights": [1.0] + [0.0] * (model.config.num_labels - 1),
                "encoder": is_encoder(model.config), "max_length": 1024, "ensemble": {"size": 1, "num_heads": 1}}
        info["heads"] = ["overall"] + [f"label_{i}" for i in range(1, model.config.num_labels)]
        return RewardScorer([model], tok, info)
    info = json.loads((final / INFO_FILE).read_text())
    folders = [(final / m).resolve() for m in info.get("members", [])] or [final]
    missing = [str(f) for f in folders if not (f / "config.json").exists()]
    if missing:
        raise ValueError(f"{final}/{INFO_FILE} names ensemble members that are missing: {', '.join(missing)}")
    tok = load_tokenizer(str(final))
    models = [load_reward_model(str(f), num_labels=_num_labels(f), dtype=dtype) for f in folders]
    return RewardScorer(models, tok, info)


def _num_labels(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text()).get("num_labels")
               or len(json.loads((folder / "config.json").read_text()).get("id2label", {})) or 1)
