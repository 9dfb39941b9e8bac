"""Agent workers for real CoGames episodes (``--parallel-policy`` with ``-m cogames:...``).

Upstream's step is ~90% Python per agent: building each agent's ``AgentObservation`` from
the engine's token buffer and calling its policy. Here the episode's process keeps
upstream's own ``Rollout`` (engine, stats handlers, timeout accounting, replay writer)
and only replaces where the agents' actions are computed:

- per episode each agent worker gets the env config, the policy specs, the assignment
  and its contiguous slice of agents; it builds the policies it needs with upstream's
  ``initialize_or_load_policy`` (fresh per episode, as upstream does) and resets them;
- per step the episode's process copies the engine's raw observation buffer
  (``agents x tokens x 3`` bytes) into one ``multiprocessing.shared_memory`` block and
  sends each worker only the step tag (plus visible talk, when the mission has talk);
  each worker builds its agents' ``AgentObservation`` objects from views of that block,
  exactly as ``SimulationAgent.observation`` does, and steps them: agents of one policy
  that allows it (upstream's ``can_step_group``) in one ``step_group`` call, the others
  one by one, each timed around its own observation + call as upstream times it;
- the actions, times and infos come back (a few bytes per agent) and go through
  upstream's ``Rollout._apply_step_result``, so late actions, no-ops, timeout counts,
  infos and replays are upstream's.

With deterministic policies the episode is the same as upstream's ``run_episode_local``
(tests compare the JSON byte for byte). Everything here imports upstream lazily.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# --------------------------------------------------------------------------- worker side


def _attach(name: str):
    """Attach to the episode process's block without registering it with a resource
    tracker: the episode's process owns (and unlinks) it, and a tracker started here would
    "clean up" the block with a warning when this worker exits (Python < 3.13 has no
    ``track=False``). Workers are single-threaded, so the swap is safe."""
    from multiprocessing import resource_tracker, shared_memory

    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


class RealAgentGroup:
    """Inside one agent worker: the policies of its agents for the current real episode."""

    def __init__(self) -> None:
        self.shm = None
        self.obs: np.ndarray | None = None
        self.agents: dict[int, Any] = {}
        self.assignment: tuple[int, ...] = ()
        self.names: list[str] = []
        self.features: dict[int, Any] = {}

    def handle(self, msg: tuple) -> Any:
        kind = msg[0]
        if kind == "real_begin":
            self.begin(*msg[2:])
            return None
        return self.step(*msg[2:])

    def _detach(self) -> None:
        self.agents = {}
        self.obs = None
        if self.shm is not None:
            try:
                self.shm.close()
            except BufferError:  # a policy still holds a token view: the mapping goes with it
                pass
            self.shm = None

    def begin(self, shm_name, shape, env_cfg, specs, assignment, slots, device, timeout_ms):
        from mettagrid.policy.loader import PolicyEnvInterface, initialize_or_load_policy

        self._detach()
        self.shm = _attach(shm_name)
        self.obs = np.ndarray(shape, dtype=np.uint8, buffer=self.shm.buf)
        self.features = {f.id: f for f in env_cfg.game.id_map().features()}
        env_interface = PolicyEnvInterface.from_mg_cfg(env_cfg)
        policies: dict[int, Any] = {}
        for a in sorted({assignment[i] for i in slots}):
            policies[a] = initialize_or_load_policy(env_interface, specs[a], device_override=device)
            policies[a].configure_action_timeout_ms(timeout_ms)
        self.assignment = tuple(assignment)
        self.names = [s.name for s in specs]
        self.agents = {i: policies[assignment[i]].agent_policy(i) for i in slots}
        for i in slots:
            self.agents[i].reset()

    def observation(self, i: int, talk) -> Any:
        """``SimulationAgent.observation`` from the shared block (token views, as upstream's)."""
        from mettagrid.simulator.interface import AgentObservation, ObservationToken

        tokens = []
        features = self.features
        for o in self.obs[i]:
            (_location, feature_id, value) = o
            if feature_id == 0xFF:
                break
            tokens.append(ObservationToken(feature=features[feature_id], value=int(value), raw_token=o))
        return AgentObservation(agent_id=i, tokens=tokens, talk=talk if talk is not None else [])

    def step(self, indices: list[int], talk: dict[int, Any] | None) -> list[tuple]:
        """``[(index, action, elapsed_ms, infos, start_ns, duration_ns)]`` in ``indices`` order."""
        try:
            return self._step(indices, talk or {})
        except Exception as exc:
            from cogames_parallel.agent_workers import PolicyFailure
            from cogames_parallel.rollout import one_line

            i = getattr(exc, "agent", None)
            who = (
                "a policy raised"
                if i is None
                else f"policy {self.names[self.assignment[i]]} raised on agent {i}"
            )
            raise PolicyFailure(f"{who}: {one_line(exc)}") from exc

    def _step(self, indices: list[int], talk: dict[int, Any]) -> list[tuple]:
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(self.assignment[i], []).append(i)
        out: dict[int, tuple] = {}
        for members in groups.values():
            handles = [self.agents[i] for i in members]
            if handles[0].can_step_group(handles):
                for h in handles:
                    if hasattr(h, "_infos"):
                        h._infos = {}  # noqa: SLF001 - as upstream's _step_group does
                batch = [(i, self.observation(i, talk.get(i))) for i in members]
                start_ns = time.time_ns()  # upstream times the batched call alone
                try:
                    actions = handles[0].step_group(batch)
                except Exception as exc:
                    exc.agent = members[0]
                    raise
                duration_ns = time.time_ns() - start_ns
                if len(actions) != len(members):
                    raise ValueError(f"step_group returned {len(actions)} actions for {len(members)} agents")
                infos_fn = getattr(handles[0], "group_step_infos", None)
                infos = (
                    list(infos_fn(members))
                    if callable(infos_fn)
                    else [dict(h.infos) if h.infos else {} for h in handles]
                )
                for k, i in enumerate(members):
                    out[i] = (i, actions[k], duration_ns / 1e6, infos[k], start_ns, duration_ns)
                continue
            for i, h in zip(members, handles):
                start_ns = time.time_ns()
                try:
                    action = h.step(self.observation(i, talk.get(i)))
                except Exception as exc:
                    exc.agent = i  # for the message
                    raise
                duration_ns = time.time_ns() - start_ns
                infos = h.infos
                out[i] = (i, action, duration_ns / 1e6, dict(infos) if infos else {}, start_ns, duration_ns)
        return [out[i] for i in indices]


# --------------------------------------------------------------------------- episode side


class RealWorkerAgents:
    """Steps a real episode's agents on the agent workers of a
    :class:`~cogames_parallel.agent_workers.WorkerAgents` (same processes, same pipes)."""

    def __init__(self, workers) -> None:
        self.w = workers
        self.shm = None
        self.buf: np.ndarray | None = None
        self.owner: list[int] = []

    def begin(self, task, env_cfg, timeout_ms: int) -> None:
        from multiprocessing import shared_memory

        from parallel_core.mpi import partition

        w = self.w
        n = int(env_cfg.game.num_agents)
        k = min(w.pool.n, n)
        w.groups = [list(range(a, b)) for a, b in partition(n, k)]
        w.timeout_s = task.action_timeout_ms / 1000.0
        w.episode_tag = (id(self), task.index, time.monotonic_ns())
        w.step_no = 0
        self.owner = [g for g, slots in enumerate(w.groups) for _ in slots]
        shape = (n, int(env_cfg.game.obs.num_tokens), int(env_cfg.game.obs.token_dim))
        self.shm = shared_memory.SharedMemory(create=True, size=max(1, int(np.prod(shape))))
        self.buf = np.ndarray(shape, dtype=np.uint8, buffer=self.shm.buf)
        tag = (w.episode_tag, -1)
        for g, slots in enumerate(w.groups):
            w.pool.ensure(g)
            msg = ("real_begin", tag, self.shm.name, shape, env_cfg,
                   task.policy_specs, task.assignment, slots, task.device, timeout_ms)  # fmt: skip
            w.pool.conns[g].send(msg)
            w.outstanding[g] += 1
        w._gather(list(range(len(w.groups))), tag, deadline=None)  # noqa: SLF001

    def step(self, sim, group_indices: list[list[int]]) -> list[tuple]:
        w = self.w
        w.step_no += 1
        tag = (w.episode_tag, w.step_no)
        obs = sim._c_sim.observations()  # noqa: SLF001 - the engine's token buffer
        if obs.shape != self.buf.shape:
            raise RuntimeError(f"observation buffer {obs.shape} != planned {self.buf.shape}")
        np.copyto(self.buf, obs)
        talk = _visible_talk(sim)
        order = [i for g in group_indices for i in g]
        per_worker: dict[int, list[int]] = {}
        for i in order:
            per_worker.setdefault(self.owner[i], []).append(i)
        for g, idx in per_worker.items():  # phase 1: every worker starts
            mine = {i: talk[i] for i in idx} if talk is not None else None
            w.pool.conns[g].send(("real_step", tag, idx, mine))
            w.outstanding[g] += 1
        replies = w._gather(list(per_worker), tag, deadline=None)  # noqa: SLF001 - phase 2
        by_index = {r[0]: r for g in per_worker for r in replies[g][2]}
        return [by_index[i] for i in order]

    def end(self) -> None:
        self.buf = None
        if self.shm is not None:
            try:
                self.shm.close()
            finally:
                self.shm.unlink()
                self.shm = None
        self.w.end()


def _visible_talk(sim) -> dict[int, Any] | None:
    """Each agent's visible talk, as ``SimulationAgent.observation`` reads it; None when the
    mission has no talk right now (the common case: nothing to compute or send)."""
    channel = getattr(sim, "_talk_channel", None)
    config = getattr(channel, "config", None)
    if channel is not None and config is not None and hasattr(channel, "_active_by_agent"):
        if not config.enabled or not channel._active_by_agent:  # noqa: SLF001
            return None
    return {i: sim._visible_talk(i) for i in range(sim.num_agents)}  # noqa: SLF001


def run_episode_on_workers(task, agents: RealWorkerAgents):
    """``run_episode_local`` with the policies on agent workers: upstream's
    ``single_episode_rollout`` with a ``Rollout`` whose policy step goes to the workers."""
    from pathlib import Path

    from mettagrid.policy.loader import PolicyEnvInterface, resolve_policy_class_path
    from mettagrid.policy.policy import AgentPolicy
    from mettagrid.runner.rollout import resolve_env_for_seed
    from mettagrid.runner.types import PureSingleEpisodeResult
    from mettagrid.simulator.replay_log_writer import InMemoryReplayWriter
    from mettagrid.simulator.rollout import Rollout
    from mettagrid.simulator.time_averaged_stats import TimeAveragedStatsHandler
    from mettagrid.util.module import load_symbol

    class WorkerRollout(Rollout):
        def _execute_group_steps(self, group_indices):
            return agents.step(self._sim, group_indices)

    specs = list(task.policy_specs)
    assignment = list(task.assignment)
    env = task.env_cfg
    if len(assignment) != env.game.num_agents or not all(0 <= a < len(specs) for a in assignment):
        raise ValueError("Assignments must match agent count and be within policy range")
    env = resolve_env_for_seed(env, task.seed)
    minimum = max(
        int(getattr(load_symbol(resolve_policy_class_path(s.class_path)), "minimum_action_timeout_ms", 0))
        for s in specs
    )
    timeout_ms = max(int(task.action_timeout_ms), minimum)
    agents.begin(task, env, timeout_ms)
    interface = PolicyEnvInterface.from_mg_cfg(env)
    handles = [AgentPolicy(interface) for _ in assignment]  # stand-ins; the workers act
    names = [s.name for s in specs]
    replay_writer = InMemoryReplayWriter() if task.replay_path else None
    stats = TimeAveragedStatsHandler()
    rollout = WorkerRollout(
        env,
        handles,
        policy_names=[names[a] for a in assignment],
        max_action_time_ms=timeout_ms,
        overage_budget_ms=None,
        render_mode="none",
        autostart=False,
        seed=task.seed,
        event_handlers=[stats] if replay_writer is None else [stats, replay_writer],
        tracer=None,
        policy_group_keys=assignment,
    )
    rollout.run_until_done()
    result = PureSingleEpisodeResult(
        rewards=list(rollout._sim.episode_rewards),  # noqa: SLF001 - as upstream reads them
        action_timeouts=list(rollout.timeout_counts),
        stats=rollout._sim.episode_stats,  # noqa: SLF001
        steps=rollout._sim.current_step,  # noqa: SLF001
        time_averaged_game_stats=stats.time_averaged_game_stats,
        overage_exceeded_at=list(rollout.overage_exceeded_at),
    )
    if replay_writer is not None:
        replays = replay_writer.get_completed_replays()
        if len(replays) != 1:
            raise ValueError(f"Expected 1 replay, got {len(replays)}")
        replays[0].write_replay(Path(task.replay_path).resolve().as_uri())
    return result
