"""The flat, ordered (mission x episode) task list with everything precomputed.

Every seed and every agent-to-policy assignment is derived here, in the main process,
from ``--seed`` through ``numpy.random.SeedSequence`` before anything runs. A worker only
executes a task; which worker, in which order, cannot change its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cogames_parallel.missions.base import Mission, MissionRef
from cogames_parallel.policies.spec import PolicySpec, allocate_agents


@dataclass(frozen=True)
class EvalTask:
    """One episode of one mission: the unit of work for every runner (picklable)."""

    index: int
    mission: MissionRef
    episode: int
    num_agents: int
    max_steps: int
    env_seed: int
    assignment: tuple[int, ...]  # policy index of each agent slot
    agent_seeds: tuple[int, ...]  # one RNG stream per agent slot
    policies: tuple[PolicySpec, ...]
    map_seed: int | None = None
    action_timeout_ms: float = 0.0
    replay_dir: str | None = None  # write a replay of this episode here (does not change results)


# Seeds handed to envs and policies are below 2**31: C engines (mettagrid among them)
# take a C int, and numpy/random/torch all accept that range.
SEED_BITS = 31


def _seed(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1, dtype=np.uint32)[0] >> np.uint32(32 - SEED_BITS))


def plan_tasks(
    missions: Sequence[tuple[MissionRef, Mission]],
    policies: Sequence[PolicySpec],
    episodes: int,
    seed: int,
    map_seed: int | None = None,
    action_timeout_ms: float = 0.0,
) -> list[EvalTask]:
    """Build the task list, mission-major: ``index = mission * episodes + episode``.

    Seed tree: root(seed) -> one child per mission -> one per episode -> (env,
    assignment, agents); the agents node spawns one stream per agent slot.
    """
    root = np.random.SeedSequence(seed)
    tasks: list[EvalTask] = []
    specs = tuple(policies)
    for ref, mission, mss in zip(
        [m[0] for m in missions], [m[1] for m in missions], root.spawn(len(missions))
    ):
        counts = allocate_agents([p.proportion for p in specs], mission.num_agents)
        base = np.repeat(np.arange(len(specs)), counts)
        for ep, ess in enumerate(mss.spawn(episodes)):
            env_ss, assign_ss, agents_ss = ess.spawn(3)
            assignment = np.random.default_rng(assign_ss).permutation(base)
            tasks.append(
                EvalTask(
                    index=len(tasks),
                    mission=ref,
                    episode=ep,
                    num_agents=mission.num_agents,
                    max_steps=mission.max_steps,
                    env_seed=_seed(env_ss),
                    assignment=tuple(int(a) for a in assignment),
                    agent_seeds=tuple(_seed(s) for s in agents_ss.spawn(mission.num_agents)),
                    policies=specs,
                    map_seed=map_seed,
                    action_timeout_ms=float(action_timeout_ms),
                )
            )
    return tasks
