"""Online RL's data: rollouts of a micro-batch of prompts, their rewards, and the tensors the losses read.

P prompts, G samples each, N = P * G completions (sample p * G + g is prompt p's g-th), L = the
longest completion. Every (N, L) tensor is right-padded; `mask` marks the tokens that train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from preftune.batching import SequenceBatch, collate_groups_shared
from preftune.data.prompts import PromptRow
from preftune.losses.rl import apply_truncation
from preftune.models.rollout import Rollout
from preftune.ops.logprobs import pad_by_segment
from preftune.train.configs import RLConfig
from preftune.train.rewards import RewardMix


@dataclass
class RolloutBatch:
    """One micro-batch of rollouts and everything computed from them before the update."""
    rows: list[int]                  # positions of the P prompts in the prompt list
    prompt_ids: list[list[int]]      # (P,) ragged
    completions: list[list[int]]     # (N,) ragged, the stop token kept
    texts: list[str]                 # (N,) decoded completions (special tokens skipped)
    truncated: torch.Tensor          # (N,) bool: no stop token within max_new_tokens
    rewards: torch.Tensor            # (N,) float32: the weighted reward (after truncation; NaN = skipped)
    components: dict[str, list[float]]  # component -> (N,) raw scores
    mask: torch.Tensor               # (N, L) bool: tokens that train
    sampling_logps: torch.Tensor     # (N, L) float32, from the rollout
    num_samples: int                 # G
    advantages: torch.Tensor | None = None   # (N,) or (N, L) for PPO
    returns: torch.Tensor | None = None      # (N, L) PPO's value targets
    old_logps: torch.Tensor | None = None    # (N, L), when the update is off-policy (num_iterations > 1, PPO)
    old_values: torch.Tensor | None = None   # (N, L), PPO
    ref_logps: torch.Tensor | None = None    # (N, L), when a reference is used
    extra: dict = field(default_factory=dict)

    @property
    def num_completions(self) -> int:
        return len(self.completions)

    def groups(self) -> list[list[list[int]]]:
        G = self.num_samples
        return [self.completions[p * G:(p + 1) * G] for p in range(len(self.prompt_ids))]

    def batch(self, pad_id: int) -> SequenceBatch:
        """The prefix-shared groups layout: each prompt once, its G completions after it."""
        return collate_groups_shared(self.prompt_ids, self.groups(), pad_id)

    def padded(self, token_values: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """(num tokens,) values in gather order -> (N, L) like `mask` (zero-padded)."""
        values, m = pad_by_segment(token_values, segment, self.num_completions)
        out = torch.zeros(self.mask.shape, dtype=values.dtype, device=values.device)
        width = min(out.shape[1], values.shape[1])
        out[:, :width] = values[:, :width]
        assert torch.equal(m[:, :width], self.completion_mask()[:, :width].to(m.device)), "token order"
        return out

    def completion_mask(self) -> torch.Tensor:
        lengths = torch.tensor([len(c) for c in self.completions])
        return torch.arange(self.mask.shape[1])[None] < lengths[:, None]


def score_rollout(cfg: RLConfig, rows: list[int], prompts: list[PromptRow], prompt_ids: list[list[int]],
                  roll: Rollout, tokenizer, rewards: RewardMix | None) -> RolloutBatch:
    """Decode the completions, score them (every component), apply the truncation rule."""
    G = roll.num_samples
    completions = roll.completions()
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    convs = [prompts[rows[p]].prompt for p in range(len(rows)) for _ in range(G)]
    mask = roll.completion_mask.cpu()
    truncated = roll.truncated.cpu().bool()
    if rewards is None:  # online DPO with a judge: rewards come from pairwise verdicts later
        total, parts = [math.nan] * len(texts), {}
    else:
        columns: dict[str, list] = {}
        for key in sorted({k for r in rows for k in prompts[r].columns}):
            columns[key] = [prompts[rows[p]].columns.get(key) for p in range(len(rows)) for _ in range(G)]
        total, parts = rewards.score(convs, texts, columns)
    r = torch.tensor(total, dtype=torch.float32)
    r, mask = apply_truncation(cfg.truncated, r, mask, truncated, penalty=cfg.truncated_penalty)
    return RolloutBatch(rows, prompt_ids, completions, texts, truncated, r, parts, mask,
                        roll.sampling_logps.cpu().float(), G)


def rollout_seed(seed: int, step: int, global_index: int) -> int:
    """The sampling seed of one micro-batch: the same for 1 process x 2 slots and 2 processes x 1 slot,
    and for a resumed run (no state to save)."""
    return (seed * 1_000_003 + step * 9_973 + global_index * 101) % (2 ** 31 - 1)
