"""Where agents' actions are computed: in-process, or in persistent agent workers.

``--parallel-policy`` runs the agents of an episode on K persistent worker processes
(K = the agent level of the worker budget; agent slots are split into K contiguous
groups, one group per worker, so K = number of agents gives one worker per agent).
Each worker builds its policies once per (spec, mission) and keeps them; per episode
it only gets the assignment and seeds, and per step only observations go out and
actions come back. A step is two-phase: send every group's observations first, then
gather every group's actions, so all workers compute at the same time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from itertools import count
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from cogames_parallel.policies.base import PolicyEnvInfo
from cogames_parallel.policies.spec import build_policy
from cogames_parallel.procs import exit_description, mp_context, stop_process, worker_setup
from cogames_parallel.rollout import EpisodeError, one_line, trimmed_traceback
from cogames_parallel.tasks import EvalTask
from cogames_parallel.watchdog import Hung, deadline

# An in-process policy call that has not returned after HANG_FACTOR x --action-timeout-ms
# (at least HANG_MIN_S) is pre-empted and fails its episode: a late action only costs a
# no-op, but a call that never returns would freeze the whole run.
HANG_FACTOR = 20
HANG_MIN_S = 2.0


def hang_limit_s(action_timeout_s: float) -> float:
    return max(HANG_FACTOR * action_timeout_s, HANG_MIN_S) if action_timeout_s > 0 else 0.0


class PolicyFailure(EpisodeError):
    """A policy raised while building or stepping; the episode fails with this message."""


class AgentWorkerDied(EpisodeError):
    """An agent worker process exited in the middle of an episode."""


class AgentGroup:
    """Computes actions for a set of agent slots in the current process.

    Policies are cached per (spec, mission), so a persistent worker builds each once.
    """

    def __init__(self) -> None:
        self._policies: dict[tuple, Any] = {}
        self.entries: dict[int, tuple[Any, Any, str]] = {}
        self.timeout_s = 0.0
        self.noop: Any = 0

    def begin(self, task: EvalTask, env_info: PolicyEnvInfo, slots: Sequence[int]) -> None:
        self.timeout_s = task.action_timeout_ms / 1000.0
        self.noop = noop_action(env_info.action_space)
        self.entries = {}
        for slot in slots:
            spec = task.policies[task.assignment[slot]]
            key = (spec, task.mission)
            try:
                if key not in self._policies:
                    self._policies[key] = build_policy(spec, env_info)
                policy = self._policies[key]
                agent = policy.agent_policy(slot)
                agent.reset(task.agent_seeds[slot])
            except Exception as exc:
                raise PolicyFailure(
                    f"policy {spec.name} failed to start (agent {slot}): {one_line(exc)}"
                ) from exc
            self.entries[slot] = (policy, agent, spec.name)

    def act(self, slots: Sequence[int], obs: Sequence[Any]) -> tuple[list[int], list[bool]]:
        actions: list[Any] = [self.noop] * len(slots)
        timed_out = [False] * len(slots)
        # agents of one policy that defines step_batch are stepped with one call
        batches: dict[int, list[int]] = {}
        order: list[list[int]] = []
        for k, slot in enumerate(slots):
            policy = self.entries[slot][0]
            if callable(getattr(policy, "step_batch", None)):
                if id(policy) not in batches:
                    batches[id(policy)] = []
                    order.append(batches[id(policy)])
                batches[id(policy)].append(k)
            else:
                order.append([k])
        for ks in order:
            policy, _, name = self.entries[slots[ks[0]]]
            start = time.perf_counter()
            limit = hang_limit_s(self.timeout_s)
            try:
                with deadline(
                    limit,
                    f"policy {name} did not return an action for agent {slots[ks[0]]} within "
                    f"{limit:g} s ({HANG_FACTOR} x --action-timeout-ms); episode stopped",
                ):
                    if len(ks) > 1 or callable(getattr(policy, "step_batch", None)):
                        out = policy.step_batch(
                            [self.entries[slots[k]][1] for k in ks],
                            np.stack([np.asarray(obs[k]) for k in ks]),
                        )
                        got = [_action(a) for a in out]
                    else:
                        got = [_action(self.entries[slots[ks[0]]][1].step(obs[ks[0]]))]
            except Hung as exc:
                raise PolicyFailure(str(exc)) from None
            except Exception as exc:
                raise PolicyFailure(
                    f"policy {name} raised on agent {slots[ks[0]]}: {one_line(exc)}"
                ) from exc
            late = self.timeout_s > 0 and time.perf_counter() - start > self.timeout_s
            for k, a in zip(ks, got):
                # a late action is dropped for the no-op (action 0) and counted
                actions[k] = self.noop if late else a
                timed_out[k] = late
        return actions, timed_out


def noop_action(space: Any) -> Any:
    """The action a late agent gets: 0 for discrete spaces, the point nearest 0 for a Box."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is not None and high is not None and getattr(space, "shape", ()):
        return np.clip(np.zeros(space.shape, dtype=space.dtype), low, high)
    return 0


def _action(a: Any) -> Any:
    """Discrete actions as ints; anything else (Box vectors, dicts) is passed on unchanged."""
    if isinstance(a, (int, np.integer)):
        return int(a)
    arr = np.asarray(a)
    if arr.ndim == 0 and np.issubdtype(arr.dtype, np.integer):
        return int(arr)
    return arr if arr.dtype != object else a


class InProcessAgents:
    """All agents of an episode in the calling process."""

    def __init__(self) -> None:
        self.group = AgentGroup()

    def begin(self, task: EvalTask, env_info: PolicyEnvInfo) -> None:
        self.group.begin(task, env_info, range(task.num_agents))

    def act(self, slots, obs):
        return self.group.act(slots, obs)

    def end(self) -> None:
        pass

    def close(self) -> None:
        pass


def _agent_worker_main(conn) -> None:
    """Loop of one agent worker: ``begin`` builds/resets its agents, ``step`` acts."""
    worker_setup()
    group = AgentGroup()
    real = None  # real CoGames episodes (cogames_parallel.real_agents), made on first use
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        kind, tag = msg[0], msg[1]
        try:
            if kind.startswith("real_"):
                if real is None:
                    from cogames_parallel.real_agents import RealAgentGroup

                    real = RealAgentGroup()
                reply = ("ok", tag, real.handle(msg), None)
            elif kind == "begin":
                _, _, task, env_info, slots = msg
                group.begin(task, env_info, slots)
                reply = ("ok", tag, None, None)
            else:  # "step"
                _, _, slots, obs = msg
                actions, timed_out = group.act(slots, obs)
                reply = ("ok", tag, actions, timed_out)
        except Exception as exc:
            # where it happened: the policy's own exception, not our wrapper around it
            reply = ("error", tag, one_line(exc), trimmed_traceback(exc.__cause__ or exc))
        try:
            conn.send(reply)
        except (OSError, BrokenPipeError):
            return


class AgentWorkerPool:
    """K persistent agent worker processes (started lazily, restarted if one dies)."""

    def __init__(self, n_workers: int) -> None:
        self.n = int(n_workers)
        self.procs: list[Any] = [None] * self.n
        self.conns: list[Any] = [None] * self.n

    def ensure(self, i: int) -> None:
        if self.procs[i] is not None and self.procs[i].is_alive():
            return
        if self.procs[i] is not None:
            stop_process(self.procs[i], None, grace=0.1)
        ctx = mp_context()
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_agent_worker_main, args=(child,), daemon=True, name=f"cogames-agent-{i}"
        )
        proc.start()
        child.close()
        self.procs[i], self.conns[i] = proc, parent

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]


    def close(self) -> None:
        for i in range(self.n):
            stop_process(self.procs[i], self.conns[i], grace=0.5)
            self.procs[i] = self.conns[i] = None

    def terminate(self) -> None:
        """Fast teardown from a signal handler: SIGTERM everything, then reap."""
        for p in self.procs:
            if p is not None and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            if p is not None:
                p.join(0.5)


class WorkerAgents:
    """The agents of an episode on an :class:`AgentWorkerPool` (two-phase steps)."""

    _serial = count()

    def __init__(self, n_workers: int) -> None:
        self.pool = AgentWorkerPool(n_workers)
        self.groups: list[list[int]] = []
        self.timeout_s = 0.0
        self.tag: Any = None
        self.outstanding = [0] * n_workers  # requests sent minus answers read, per worker

    def begin(self, task: EvalTask, env_info: PolicyEnvInfo) -> None:
        from parallel_core.mpi import partition

        n = task.num_agents
        k = min(self.pool.n, n)
        self.groups = [list(range(a, b)) for a, b in partition(n, k)]
        self.timeout_s = task.action_timeout_ms / 1000.0
        self.noop = noop_action(env_info.action_space)
        self.episode_tag = (os.getpid(), next(self._serial))
        self.step_no = 0
        tag = (self.episode_tag, -1)
        for i, slots in enumerate(self.groups):
            self.pool.ensure(i)
            self.pool.conns[i].send(("begin", tag, task, env_info, slots))
            self.outstanding[i] += 1
        # building policies may take a while (imports, weights): no deadline here
        self._gather(list(range(len(self.groups))), tag, deadline=None)

    def _gather(self, workers: list[int], tag, deadline: float | None) -> dict[int, tuple]:
        """Wait for every worker in ``workers`` to answer ``tag``; stale answers are dropped."""
        replies: dict[int, tuple] = {}
        waiting = {self.pool.conns[i]: i for i in workers}
        sentinels = {self.pool.procs[i].sentinel: i for i in workers}
        while waiting:
            timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready = wait(
                list(waiting) + [s for s, i in sentinels.items() if self.pool.conns[i] in waiting],
                timeout,
            )
            if not ready:
                break  # deadline passed: the rest timed out
            for obj in ready:
                if obj in waiting:
                    i = waiting[obj]
                    try:
                        reply = obj.recv()
                    except (EOFError, OSError):
                        self._died(i)
                    self.outstanding[i] -= 1
                    if reply[1] != tag:
                        continue  # answer to a step we already gave up on
                    if reply[0] == "error":
                        failure = PolicyFailure(reply[2])
                        failure.worker_traceback = reply[3]  # where it happened, in the worker
                        raise failure
                    replies[i] = reply
                    del waiting[obj]
                elif obj in sentinels:
                    i = sentinels[obj]
                    # a worker may exit right after answering: only a silent one is dead
                    if self.pool.conns[i] in waiting and not self.pool.conns[i].poll():
                        self._died(i)
        return replies

    def _died(self, i: int):
        proc = self.pool.procs[i]
        proc.join(0.1)
        raise AgentWorkerDied(
            f"agent worker {i} (agents {self.groups[i][0]}-{self.groups[i][-1]}) {exit_description(proc)}"
        )

    def act(self, slots, obs):
        self.step_no += 1
        tag = (self.episode_tag, self.step_no)
        where = {}
        per_worker: list[tuple[list[int], list[Any]]] = [([], []) for _ in self.groups]
        owner = {s: i for i, g in enumerate(self.groups) for s in g}
        for k, (slot, o) in enumerate(zip(slots, obs)):
            i = owner[slot]
            where[k] = (i, len(per_worker[i][0]))
            per_worker[i][0].append(slot)
            per_worker[i][1].append(o)
        busy = [i for i, (s, _) in enumerate(per_worker) if s]
        start = time.perf_counter()
        for i in busy:  # phase 1: submit every group
            s, o = per_worker[i]
            payload = np.stack([np.asarray(x) for x in o]) if _stackable(o) else o
            self.pool.conns[i].send(("step", tag, s, payload))
            self.outstanding[i] += 1
        deadline = None
        if self.timeout_s > 0:
            # Each agent is charged for its own lateness, measured by its worker around its
            # own policy call (as in-process), so an agent that shares a worker with a slow
            # one is never charged for the wait. The step therefore waits for late answers,
            # up to the bound at which the worker pre-empts a call that never returns (and
            # answers with an error); past that (a call stuck in C code that ignores
            # signals) the group's agents get no-ops and its worker is replaced at the end.
            group = max(len(per_worker[i][0]) for i in busy)
            deadline = start + hang_limit_s(self.timeout_s) * group + 1.0
        replies = self._gather(busy, tag, deadline)  # phase 2: gather
        actions: list[Any] = [self.noop] * len(slots)
        timed_out = [True] * len(slots)
        for k in range(len(slots)):
            i, j = where[k]
            if i in replies:
                actions[k] = _action(replies[i][2][j])
                timed_out[k] = bool(replies[i][3][j])
        return actions, timed_out

    def end(self) -> None:
        """Drain late answers; a worker still busy on a timed-out step is restarted.

        Without this, a policy stuck in an endless computation would block the next
        episode's ``begin`` forever; its replacement rebuilds the policy from the spec.
        """
        deadline = time.perf_counter() + max(0.05, self.timeout_s)
        for i, pending in enumerate(self.outstanding):
            conn = self.pool.conns[i]
            while pending > 0 and conn is not None:
                try:
                    if not conn.poll(max(0.0, deadline - time.perf_counter())):
                        break
                    conn.recv()
                except (EOFError, OSError):
                    break
                pending -= 1
            if pending > 0 and self.pool.procs[i] is not None:
                stop_process(self.pool.procs[i], conn, grace=0.0)
                self.pool.procs[i] = self.pool.conns[i] = None
            self.outstanding[i] = 0

    def close(self) -> None:
        self.pool.close()


def _stackable(obs: list[Any]) -> bool:
    return (
        all(isinstance(o, np.ndarray) for o in obs) and len({(o.shape, o.dtype) for o in obs}) == 1
    )
