"""The evaluation pipeline: resolve -> plan tasks -> pick a runner -> run -> summarize.

Usable from Python as well as from the CLI::

    from cogames_parallel.evaluate import evaluate
    data = evaluate(["harvest.open"], ["greedy", "random"], episodes=4, jobs=2)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cogames_parallel.missions.base import Mission, MissionError, MissionRef
from cogames_parallel.missions.loading import build_mission, resolve_missions
from cogames_parallel.policies.spec import (
    PolicySpec,
    label_policies,
    parse_policy_spec,
    validate_spec,
    worker_unsafe_reason,
)
from cogames_parallel.rollout import EpisodeResult
from cogames_parallel.runners import MPIRunner, ProcessRunner, SerialRunner
from cogames_parallel.summary import summarize
from cogames_parallel.tasks import EvalTask, plan_tasks
from parallel_core.budget import WorkerBudget


def warn(msg: str) -> None:
    print(f"cogames: warning: {msg}", file=sys.stderr)


@dataclass
class Layout:
    """How the worker budget is spent: episode workers x agent workers per episode."""

    episode_workers: int = 1
    agent_workers: int = 1
    budget: int = 1
    notes: list[str] = field(default_factory=list)
    in_process_only: bool = False  # a policy cannot be rebuilt in a worker process

    def describe(self) -> str:
        ew = (
            "in-process" if self.episode_workers <= 1 else f"{self.episode_workers} episode workers"
        )
        aw = (
            "agents in-process"
            if self.agent_workers <= 1
            else f"{self.agent_workers} agent workers each"
        )
        return f"{ew}, {aw} (budget {self.budget})"


def worker_layout(
    jobs: int,
    n_tasks: int,
    max_agents: int,
    parallel_policy: bool,
    agent_workers: int | None = None,
) -> Layout:
    """Split ``--jobs`` between the episode level and the agent level.

    Without ``--parallel-policy`` all workers run episodes. With it the agent level is
    served first (that is what the flag asks for): K = min(agents, budget) agent
    workers (or ``--agent-workers``), and what is left runs episodes side by side.
    """
    notes = []
    if agent_workers is not None and not parallel_policy:
        notes.append("--agent-workers has no effect without --parallel-policy")
    if jobs <= 1:
        if parallel_policy:
            notes.append("--parallel-policy needs --jobs >= 2; running agents in-process")
        return Layout(1, 1, max(jobs, 1), notes)
    budget = WorkerBudget(jobs)
    if budget.total < jobs:
        notes.append(f"--jobs {jobs} capped to the {budget.total} cores available")
    if parallel_policy:
        k, e = budget.split(agent_workers or max_agents, n_tasks)
        return Layout(e, k, budget.total, notes)
    (e,) = budget.split(n_tasks)
    return Layout(e, 1, budget.total, notes)


@dataclass
class Plan:
    missions: list[tuple[MissionRef, Mission]]
    policies: list[PolicySpec]
    tasks: list[EvalTask]
    config: dict[str, Any]


def make_plan(
    missions: Sequence[str],
    policies: Sequence[str | PolicySpec],
    *,
    variants: Sequence[str] = (),
    cogs: int | None = None,
    steps: int | None = None,
    episodes: int = 10,
    seed: int = 42,
    map_seed: int | None = None,
    action_timeout_ms: float = 250.0,
) -> Plan:
    """Resolve missions and policies (raising MissionError/PolicyError on bad input) and plan tasks."""
    from cogames_parallel.policies.base import PolicyError

    if episodes < 1:
        raise PolicyError(f"--episodes must be >= 1, got {episodes}")
    if action_timeout_ms < 0:
        raise PolicyError(f"--action-timeout-ms must be >= 0, got {action_timeout_ms}")
    if seed < 0:  # SeedSequence takes non-negative integers only
        raise PolicyError(f"--seed must be >= 0, got {seed}")
    if map_seed is not None and map_seed < 0:
        raise PolicyError(f"--map-seed must be >= 0, got {map_seed}")
    specs = label_policies(
        [p if isinstance(p, PolicySpec) else parse_policy_spec(p) for p in policies]
    )
    if not specs:
        raise PolicyError("give at least one policy with -p")
    for s in specs:
        validate_spec(s)  # unknown names, bad options, missing files fail now, not in a worker
    resolved = []
    for base in resolve_missions(missions):
        ref = MissionRef(base.source, base.name, tuple(variants), cogs, steps)
        mission = build_mission(ref)
        if map_seed is not None and not mission.accepts("map_seed"):
            raise MissionError(
                f"mission {mission.name!r}: its env factory does not declare map_seed, "
                "so --map-seed cannot fix its map; drop --map-seed"
            )
        resolved.append((ref, mission))
    tasks = plan_tasks(resolved, specs, episodes, seed, map_seed, action_timeout_ms)
    config = {
        "episodes": episodes,
        "seed": seed,
        "map_seed": map_seed,
        "action_timeout_ms": float(action_timeout_ms),
    }
    return Plan(resolved, specs, tasks, config)


def make_runner(layout: Layout, backend: str = "local", ctx=None, checkpoint=None):
    """The runner for ``layout``. Under ``--backend mpi`` episodes always run in an episode
    worker process (one, if the layout has none), so a crashing episode fails alone instead
    of killing its rank (which makes ``mpirun`` kill every rank); ``checkpoint`` then gets
    the results collected on rank 0 as they arrive (see :class:`MPIRunner`)."""
    isolate = backend == "mpi" and not layout.in_process_only
    local = (
        ProcessRunner(max(layout.episode_workers, 1), layout.agent_workers)
        if layout.episode_workers > 1 or isolate
        else SerialRunner(layout.agent_workers)
    )
    if backend == "mpi":
        return MPIRunner(ctx, local, checkpoint)
    return local


def check_worker_safety(plan: Plan, layout: Layout, backend: str = "local") -> Layout:
    """Fall back to in-process (one warning) if some policy cannot be rebuilt in a worker."""
    if layout.episode_workers <= 1 and layout.agent_workers <= 1 and backend != "mpi":
        return layout
    for spec in plan.policies:
        reason = worker_unsafe_reason(spec)
        if reason:
            warn(
                f"policy {spec.name} cannot run in a worker process ({reason}); running everything in-process"
            )
            return Layout(1, 1, layout.budget, layout.notes, in_process_only=True)
    return layout


def prepare_runner(plan: Plan, layout: Layout, backend: str = "local", ctx=None, checkpoint=None):
    """The runner for ``layout`` (after the worker-safety fallback); use it as a context
    manager to start its workers up front."""
    return make_runner(check_worker_safety(plan, layout, backend), backend, ctx, checkpoint)


def plan_tasks_for_run(plan: Plan, replay_dir: str | None = None) -> list[EvalTask]:
    if replay_dir is None:
        return plan.tasks
    return [replace(t, replay_dir=str(replay_dir)) for t in plan.tasks]


def run_plan(
    plan: Plan,
    layout: Layout,
    *,
    backend: str = "local",
    on_result: Callable[[EpisodeResult], None] | None = None,
    ctx=None,
    replay_dir: str | None = None,
) -> list[EpisodeResult] | None:
    """Run every task of ``plan``; returns results in task order (None on non-root MPI ranks)."""
    runner = prepare_runner(plan, layout, backend, ctx)
    return runner.run(plan_tasks_for_run(plan, replay_dir), on_result)


def evaluate(
    missions: Sequence[str],
    policies: Sequence[str | PolicySpec],
    *,
    jobs: int = 0,
    parallel_policy: bool = False,
    agent_workers: int | None = None,
    **plan_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate ``policies`` on ``missions`` locally and return the report data."""
    plan = make_plan(missions, policies, **plan_kwargs)
    layout = worker_layout(
        jobs,
        len(plan.tasks),
        max(m.num_agents for _, m in plan.missions),
        parallel_policy,
        agent_workers,
    )
    results = run_plan(plan, layout)
    return summarize(plan.missions, plan.policies, plan.tasks, results, plan.config)
