"""How long a sequence a model can take: its position table, read from its config (no weights)."""

from __future__ import annotations

import os
from typing import Any

# config fields that bound the positions a model can embed, in the order transformers models use them
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def max_positions(name_or_config: Any) -> int | None:
    """The most tokens one sequence may hold (BERT-like: 512), or None when the config does not say."""
    cfg = name_or_config
    if isinstance(cfg, (str, os.PathLike)):
        from transformers import AutoConfig

        from preftune.models import resolve_model_path

        cfg = AutoConfig.from_pretrained(resolve_model_path(cfg))
    for key in _POSITION_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def clamp_max_length(max_length: int, model: Any, what: str = "max_length") -> tuple[int, str | None]:
    """(length to use, a one-line note when it was cut to the model's positions, else None)."""
    limit = max_positions(model)
    if limit is None or max_length <= limit:
        return max_length, None
    return limit, (f"{what}={max_length} is longer than the model's {limit} positions; using {what}={limit} "
                   f"(longer rows are truncated and counted)")
