"""The verifiable world: tasks with checkable instructions, simulated labellers, and the gold scorer.

Every stage can be measured against its truth: `gold_score(prompt, response)` scores any response
(model generations included) per attribute; `generate_world(...)` writes preference pairs whose
labels come from simulated labellers (clean, noisy, length- or position-biased). Pure Python.
"""

from preftune.world.generate import generate_world, world_prompts
from preftune.world.gold import ATTRIBUTES, gold_compare, gold_score, is_refusal

__all__ = ["ATTRIBUTES", "generate_world", "gold_compare", "gold_score", "is_refusal", "world_prompts"]
