"""Missions: the registry of built-in cooperative gridworlds and user mission loading."""

from cogames_parallel.missions.base import Mission, MissionError, MissionRef
from cogames_parallel.missions.builtin import BUILTIN_MISSIONS, COMMON_VARIANTS
from cogames_parallel.missions.gridworld import CoopGridEnv, decode_observation
from cogames_parallel.missions.loading import build_mission, resolve_missions

__all__ = [
    "BUILTIN_MISSIONS",
    "COMMON_VARIANTS",
    "CoopGridEnv",
    "Mission",
    "MissionError",
    "MissionRef",
    "build_mission",
    "decode_observation",
    "resolve_missions",
]
