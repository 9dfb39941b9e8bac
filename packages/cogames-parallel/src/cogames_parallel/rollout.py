"""One episode: per step, read every agent's observation, compute all actions, step the env.

The rollout does not know where actions are computed: ``agents`` is either in-process
(:class:`~cogames_parallel.agent_workers.InProcessAgents`) or a set of persistent agent
worker processes (:class:`~cogames_parallel.agent_workers.WorkerAgents`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cogames_parallel.missions.loading import build_mission
from cogames_parallel.policies.base import PolicyEnvInfo
from cogames_parallel.tasks import EvalTask


class Agents(Protocol):
    def begin(self, task: EvalTask, env_info: PolicyEnvInfo) -> None: ...
    def act(self, slots: list[int], obs: list[Any]) -> tuple[list[int], list[bool]]: ...
    def end(self) -> None: ...


@dataclass
class EpisodeResult:
    """Outcome of one task; stored by ``index`` so completion order never matters."""

    index: int
    mission: str
    episode: int
    seed: int
    assignment: tuple[int, ...]
    status: str = "ok"
    steps: int = 0
    rewards: tuple[float, ...] = ()
    timeouts: tuple[int, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class EpisodeError(RuntimeError):
    """An error whose message already says what happened (no type-name prefix needed)."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, EpisodeError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failed_result(task: EvalTask, error: str) -> EpisodeResult:
    if not isinstance(task, EvalTask):  # upstream.UpstreamTask builds its own failed result
        return task.failed(error)
    return EpisodeResult(
        index=task.index,
        mission=task.mission.label(),
        episode=task.episode,
        seed=task.env_seed,
        assignment=task.assignment,
        status="failed",
        error=error,
    )


def _write_replay(task: EvalTask, names: list[str], replay: dict, stats: dict) -> None:
    import json
    import os

    from parallel_core.io import atomic_write

    doc = {
        "mission": task.mission.label(),
        "episode": task.episode,
        "seed": task.env_seed,
        "map_seed": task.map_seed,
        "agents": names,
        "policies": [task.policies[a].name for a in task.assignment],
        "stats": stats,
        **replay,
    }
    safe = task.mission.label().replace("/", "_").replace(":", "_").replace("+", "_")
    path = os.path.join(task.replay_dir, f"{safe}.ep{task.episode:04d}.json")
    with atomic_write(path, mode="w") as f:
        json.dump(doc, f)


def run_episode(task: EvalTask, agents: Agents) -> EpisodeResult:
    """Play ``task`` to the end; any exception becomes a failed result, never zeros."""
    env = None
    try:
        mission = build_mission(task.mission)
        env = mission.make_env(map_seed=task.map_seed)
        obs, _ = env.reset(seed=task.env_seed)
        names = list(env.possible_agents)
        if len(names) != task.num_agents:
            raise RuntimeError(f"env has {len(names)} agents, planned for {task.num_agents}")
        info = PolicyEnvInfo(
            mission=task.mission.label(),
            observation_space=env.observation_space(names[0]),
            action_space=env.action_space(names[0]),
            num_agents=len(names),
        )
        agents.begin(task, info)
        rewards = np.zeros(len(names), dtype=np.float64)
        timeouts = np.zeros(len(names), dtype=np.int64)
        steps = 0
        replay: dict[str, list] | None = {"actions": [], "rewards": []} if task.replay_dir else None
        while env.agents and steps < task.max_steps:
            live = set(env.agents)
            slots = [i for i, a in enumerate(names) if a in live and a in obs]
            actions, timed_out = agents.act(slots, [obs[names[i]] for i in slots])
            for i, t in zip(slots, timed_out):
                timeouts[i] += t
            obs, rew, _, _, _ = env.step({names[i]: a for i, a in zip(slots, actions)})
            for i, a in enumerate(names):
                rewards[i] += rew.get(a, 0.0)
            steps += 1
            if replay is not None:
                replay["actions"].append([np.asarray(a).tolist() for a in actions])
                replay["rewards"].append([float(rew.get(a, 0.0)) for a in names])
        stats_fn = getattr(env, "episode_stats", None)
        stats = {k: float(v) for k, v in stats_fn().items()} if callable(stats_fn) else {}
        if replay is not None:
            _write_replay(task, names, replay, stats)
        return EpisodeResult(
            index=task.index,
            mission=task.mission.label(),
            episode=task.episode,
            seed=task.env_seed,
            assignment=task.assignment,
            steps=steps,
            rewards=tuple(float(r) for r in rewards),
            timeouts=tuple(int(t) for t in timeouts),
            stats=stats,
        )
    except Exception as exc:
        result = failed_result(task, one_line(exc))
        result.traceback = getattr(exc, "worker_traceback", None) or trimmed_traceback(exc)
        return result
    finally:
        try:
            agents.end()
        finally:
            if env is not None:
                _close_quietly(env, task)


def _close_quietly(env, task: EvalTask) -> None:
    """A failing ``env.close()`` must not discard a finished episode or stop the run."""
    import sys

    try:
        env.close()
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        print(
            f"cogames: warning: {task.mission.label()} episode {task.episode}: env.close() "
            f"raised {one_line(exc)}; the episode's results are kept",
            file=sys.stderr,
        )


def trimmed_traceback(exc: BaseException, lines: int = 12) -> str:
    """The last ``lines`` lines of ``exc``'s traceback (kept in the JSON of a failed episode)."""
    import traceback

    text = "".join(traceback.format_exception(exc)).rstrip().splitlines()
    if len(text) > lines:
        text = ["...", *text[-lines:]]
    return "\n".join(text)
