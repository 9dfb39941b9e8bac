"""Per-agent learners."""

from .dqn import DQNAgent, QNetwork, check_independent, make_agents

__all__ = ["DQNAgent", "QNetwork", "check_independent", "make_agents"]
