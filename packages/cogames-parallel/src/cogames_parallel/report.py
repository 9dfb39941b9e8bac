"""Render the report data: rich tables for people, JSON/YAML for programs."""

from __future__ import annotations

import json
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def to_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def render(data: dict[str, Any], format: str) -> str:
    if format == "json":
        return to_json(data)
    if format == "yaml":
        return to_yaml(data)
    raise ValueError(f"unknown format {format!r}")


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def print_tables(data: dict[str, Any], console: Console) -> None:
    """Policy assignments, average game stats, per-policy stats, per-episode rewards, timeouts."""
    policies = [p["name"] for p in data["config"]["policies"]]

    t = Table(title="Policy assignments (agents per episode; shuffled per episode)")
    t.add_column("mission", no_wrap=True)
    t.add_column("agents", justify="right")
    for p in policies:
        t.add_column(p, justify="right")
    for a in data["assignments"]:
        t.add_row(a["mission"], str(a["agents"]), *(str(a["per_policy"][p]) for p in policies))
    console.print(t)

    # one table per set of stat names, so harvest and delivery columns do not mix
    groups: dict[tuple[str, ...], list[str]] = {}
    for mission, s in data["game_stats"].items():
        groups.setdefault(tuple(s), []).append(mission)
    for keys, missions in groups.items():
        t = Table(title="Average game stats (per successful episode)")
        t.add_column("mission", no_wrap=True)
        for k in keys:
            t.add_column(k.replace("_", " "), justify="right")
        for mission in missions:
            s = data["game_stats"][mission]
            t.add_row(mission, *(_fmt(s.get(k)) for k in keys))
        console.print(t)

    t = Table(title="Average per-policy stats (per agent-episode)")
    for col in ("mission", "policy", "agent-episodes", "mean reward", "min", "max", "timeouts"):
        t.add_column(col, justify="left" if col in ("mission", "policy") else "right")
    for mission, ps in data["policy_stats"].items():
        for p, s in ps.items():
            t.add_row(
                mission,
                p,
                str(s["agent_episodes"]),
                _fmt(s["mean_reward"]),
                _fmt(s["min_reward"]),
                _fmt(s["max_reward"]),
                str(s["timeouts"]),
            )
    console.print(t)

    t = Table(title="Reward per agent, per episode and policy")
    t.add_column("mission", no_wrap=True)
    t.add_column("episode", justify="right")
    t.add_column("status")
    for p in policies:
        t.add_column(p, justify="right")
    for ep in data["episodes"]:
        per = ep.get("reward_per_agent", {})
        status = ep["status"] if ep["status"] == "ok" else f"[red]{ep['status']}[/red]"
        t.add_row(ep["mission"], str(ep["episode"]), status, *(_fmt(per.get(p)) for p in policies))
    console.print(t)

    rows = [
        (ep["mission"], ep["episode"], name, n)
        for ep in data["episodes"]
        for name, n in _timeouts_by_policy(ep).items()
        if n
    ]
    if rows:
        t = Table(title="Action timeouts (replaced by no-op)")
        for col in ("mission", "episode", "policy", "timeouts"):
            t.add_column(col)
        for r in rows:
            t.add_row(*(str(x) for x in r))
        console.print(t)

    if data["failed"]:
        t = Table(title="[red]Failed episodes[/red]")
        for col in ("mission", "episode", "error"):
            t.add_column(col)
        for f in data["failed"]:
            t.add_row(f["mission"], str(f["episode"]), f["error"])
        console.print(t)


def _timeouts_by_policy(ep: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, n in zip(ep["assignment"], ep.get("timeouts", [])):
        out[name] = out.get(name, 0) + int(n)
    return out
