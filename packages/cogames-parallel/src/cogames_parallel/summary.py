"""Aggregate per-episode results into the report data (plain dicts, JSON/YAML ready).

Everything here is a pure function of (plan, results in task order), so the output is
byte-identical however the episodes were distributed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cogames_parallel.missions.base import Mission, MissionRef
from cogames_parallel.policies.spec import PolicySpec, allocate_agents
from cogames_parallel.rollout import EpisodeResult
from cogames_parallel.tasks import EvalTask

DIGITS = 6


def _r(x: float) -> float:
    return round(float(x), DIGITS)


def summarize(
    missions: Sequence[tuple[MissionRef, Mission]],
    policies: Sequence[PolicySpec],
    tasks: Sequence[EvalTask],
    results: Sequence[EpisodeResult],
    config: dict[str, Any],
) -> dict[str, Any]:
    """Build the report: config, assignments, game stats, per-policy stats, episodes, failures."""
    by_index = {r.index: r for r in results}
    names = [p.name for p in policies]
    data: dict[str, Any] = {
        "config": {
            **config,
            "missions": [
                {
                    "name": ref.label(),
                    "source": ref.source,
                    "variants": list(ref.variants),
                    "agents": m.num_agents,
                    "max_steps": m.max_steps,
                }
                for ref, m in missions
            ],
            "policies": [p.to_dict() for p in policies],
        },
        "assignments": [],
        "game_stats": {},
        "policy_stats": {},
        "episodes": [],
        "failed": [],
    }
    for ref, m in missions:
        counts = allocate_agents([p.proportion for p in policies], m.num_agents)
        data["assignments"].append(
            {"mission": ref.label(), "agents": m.num_agents, "per_policy": dict(zip(names, counts))}
        )
    for ref, _m in missions:
        label = ref.label()
        mtasks = [t for t in tasks if t.mission == ref]
        ok = [by_index[t.index] for t in mtasks if t.index in by_index and by_index[t.index].ok]
        stats: dict[str, Any] = {"episodes": len(mtasks), "episodes_ok": len(ok)}
        if ok:
            stats["steps"] = _r(sum(r.steps for r in ok) / len(ok))
            stats["team_reward"] = _r(sum(sum(r.rewards) for r in ok) / len(ok))
            for key in sorted({k for r in ok for k in r.stats}):
                stats[key] = _r(sum(r.stats.get(key, 0.0) for r in ok) / len(ok))
        data["game_stats"][label] = stats
        pstats = {}
        for pi, name in enumerate(names):
            rewards = [r.rewards[s] for r in ok for s, a in enumerate(r.assignment) if a == pi]
            timeouts = sum(r.timeouts[s] for r in ok for s, a in enumerate(r.assignment) if a == pi)
            pstats[name] = {
                "agent_episodes": len(rewards),
                "mean_reward": _r(sum(rewards) / len(rewards)) if rewards else None,
                "min_reward": _r(min(rewards)) if rewards else None,
                "max_reward": _r(max(rewards)) if rewards else None,
                "timeouts": int(timeouts),
            }
        data["policy_stats"][label] = pstats
    for t in tasks:
        r = by_index.get(t.index)
        ep: dict[str, Any] = {
            "mission": t.mission.label(),
            "episode": t.episode,
            "seed": t.env_seed,
            "status": r.status if r else "missing",
            "assignment": [names[a] for a in t.assignment],
        }
        if r is not None and r.ok:
            ep["steps"] = r.steps
            ep["rewards"] = [_r(x) for x in r.rewards]
            per_policy = {}
            for pi, name in enumerate(names):
                rs = [r.rewards[s] for s, a in enumerate(t.assignment) if a == pi]
                if rs:
                    per_policy[name] = _r(sum(rs) / len(rs))
            ep["reward_per_agent"] = per_policy
            ep["timeouts"] = list(r.timeouts)
            ep["stats"] = {k: _r(v) for k, v in r.stats.items()}
        else:
            err = r.error if r is not None else "no result came back for this episode"
            ep["error"] = err
            failure = {"mission": t.mission.label(), "episode": t.episode, "error": err}
            if r is not None and r.traceback:  # trimmed: the last lines, where it happened
                ep["traceback"] = failure["traceback"] = r.traceback
            data["failed"].append(failure)
        data["episodes"].append(ep)
    return data
