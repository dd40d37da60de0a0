"""The tool-use world: executable tools over small invented data (tools.py), tasks with their gold calls
and answers (tasks.py), the gold scorer per step and per trajectory (gold.py), and preference pairs
(generate.py, `preftune data world --agent`). Pure Python."""

from preftune.world.agent.generate import generate_agent_world, good_trajectory
from preftune.world.agent.gold import AGENT_ATTRIBUTES, score_step, score_trajectory
from preftune.world.agent.tasks import AgentTask, sample_task
from preftune.world.agent.tools import TOOLS, execute

__all__ = ["AGENT_ATTRIBUTES", "TOOLS", "AgentTask", "execute", "generate_agent_world", "good_trajectory",
           "sample_task", "score_step", "score_trajectory"]
