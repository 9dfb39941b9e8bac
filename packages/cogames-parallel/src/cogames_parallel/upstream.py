"""Real CoGames missions and policies (``-m cogames:<mission>``), scored exactly as upstream.

Upstream ``cogames run`` evaluates through ``mettagrid.runner.rollout.run_multi_episode_rollout``:
per mission, the agents are split by ``allocate_counts`` on the proportions, one
``random.Random(seed)`` shuffles that assignment before every episode, episode ``k`` runs
``run_episode_local(..., seed=seed + k)`` with freshly built policies, and
``build_multi_episode_rollout_summaries`` averages the results. An episode is therefore a
pure function of (policy specs, assignment, env config, seed).

This module is a thin adapter over those upstream objects: it resolves missions and
policy specs with upstream's own CLI helpers, precomputes every episode's assignment and
seed in the main process exactly as upstream's loop would, and hands each episode to our
runners (serial, process pool, MPI ranks) as an :class:`UpstreamTask`. The summary is
built by upstream's own function from the results in task order, so the JSON equals what
``cogames run`` prints for the same flags, whatever ran where.

Nothing here imports upstream at module import time: ``cogames --help`` stays fast and
works without upstream installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "cogames:"
GAME = "cogs_vs_clips"
DEFAULT_MISSION = PREFIX + "arena"
DEFAULT_POLICY = "starter"


class UpstreamError(ValueError):
    """Bad input for an upstream mission or policy (a usage error: exit 2)."""


def installed() -> bool:
    """True when upstream CoGames (``cogames`` + ``mettagrid``) is importable (without importing it)."""
    try:
        return (
            importlib.util.find_spec("cogames") is not None
            and importlib.util.find_spec("mettagrid") is not None
        )
    except (ImportError, ValueError):
        return False


def is_upstream(mission: str) -> bool:
    return mission.startswith(PREFIX)


def require_installed() -> None:
    if not installed():
        raise UpstreamError(
            "real CoGames missions need upstream CoGames: "
            "pip install 'cogames-parallel[upstream]' (Python 3.12), or uv sync --extra upstream"
        )


# --------------------------------------------------------------------------- missions


def resolve_missions(
    patterns: Sequence[str],
    *,
    variants: Sequence[str] = (),
    cogs: int | None = None,
    steps: int | None = None,
    map_seed: int | None = None,
) -> list[tuple[str, Any]]:
    """``cogames:<pattern>`` arguments -> ``[(name, MettaGridConfig)]`` as upstream ``cogames run``
    resolves them (wildcards, ``-v`` variants, ``-c`` cogs, ``-s`` steps, ``--map-seed``)."""
    require_installed()
    from cogames.cli.mission import resolve_missions_by_wildcard
    from cogames.game import get_game
    from mettagrid.mapgen.mapgen import MapGen

    game = get_game(GAME)
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for pattern in patterns:
        name = pattern[len(PREFIX) :] if is_upstream(pattern) else pattern
        if not name:
            raise UpstreamError(f"mission {pattern!r}: give a name after {PREFIX!r}, e.g. {DEFAULT_MISSION}")
        try:
            found = resolve_missions_by_wildcard(game, name, list(variants) or None, cogs)
        except (ValueError, KeyError) as exc:
            raise UpstreamError(
                f"mission {pattern!r}: {' '.join(str(exc).split())} (run `cogames missions` to list them)"
            ) from None
        for mname, env_cfg in found:
            if mname not in seen:
                seen.add(mname)
                out.append((mname, env_cfg))
    if not out:
        raise UpstreamError(f"no CoGames mission matches {list(patterns)}; run `cogames missions`")
    for _, env_cfg in out:
        if steps is not None:
            env_cfg.game.max_steps = steps
        if map_seed is not None:
            builder = getattr(env_cfg.game, "map_builder", None)
            if isinstance(builder, MapGen.Config):
                builder.seed = map_seed
    check_map_capacity(out)
    return out


def check_map_capacity(missions: Sequence[tuple[str, Any]]) -> None:
    """``-c`` larger than a fixed map's spawn points fails in every episode: say it once, now."""
    for name, env_cfg in missions:
        builder = env_cfg.game.map_builder
        n = int(env_cfg.game.num_agents)
        # MapGen maps place their spawns from spawn_count; ASCII/fixed maps have a fixed number
        map_data = getattr(builder, "map_data", None)
        if map_data is None:
            continue
        spawns = sum(row.count("@") for row in map_data) if isinstance(map_data, list) else None
        if spawns is not None and spawns and n > spawns:
            raise UpstreamError(
                f"mission {name}: -c/--cogs {n} is more than the {spawns} spawn points of its map"
            )


def check_cogs_fit(missions: Sequence[tuple[str, Any]], seed: int) -> None:
    """``-c`` more than a procedural map can spawn fails in every episode (upstream prints a
    traceback for it): build episode 0's map once now and say it in one line. Only ``-c``
    runs pay for this; other map errors are left to the episodes."""
    import re

    from mettagrid.runner.rollout import resolve_env_for_seed

    for name, env_cfg in missions:
        cfg = resolve_env_for_seed(env_cfg, seed)
        n = int(cfg.game.num_agents)
        try:
            cfg.game.map_builder.create().build_for_num_agents(n)
        except ValueError as exc:
            found = re.search(r"exceeds available spawn points (\d+)", str(exc))
            if found:
                raise UpstreamError(
                    f"mission {name}: -c/--cogs {n} is more than the {found.group(1)} spawn "
                    "points of its map"
                ) from None


def list_missions() -> list[str]:
    """Every upstream mission name (core missions and evals), with our ``cogames:`` prefix."""
    from cogames.cli.mission import get_all_eval_mission_names, get_all_mission_names
    from cogames.game import get_game

    game = get_game(GAME)
    return [PREFIX + n for n in get_all_mission_names(game) + get_all_eval_mission_names(game)]


# --------------------------------------------------------------------------- policies


def resolve_device(device: str, quiet: bool = False) -> str:
    """``--device`` as upstream resolves it (auto -> cuda if usable, else cpu); upstream's own
    notes ("CUDA requested but unavailable...") go to stderr unless ``quiet``."""
    from cogames.device import resolve_training_device
    from rich.console import Console

    return str(resolve_training_device(Console(stderr=True, quiet=quiet), device))


def parse_policies(specs: Sequence[str], device: str) -> list[Any]:
    """``-p`` values -> upstream ``PolicySpecWithProportion`` objects, parsed by upstream itself
    (short names, ``class=...,data=...,proportion=...,kw.x=...``, checkpoint dirs and bundles)."""
    require_installed()
    from cogames.cli.policy import _translate_error, parse_policy_spec

    out = []
    for spec in specs:
        try:
            out.append(parse_policy_spec(spec=spec, device=device))
        except (ValueError, ModuleNotFoundError, ImportError, FileNotFoundError) as exc:
            raise UpstreamError(f"policy {spec!r}: {_plain(_translate_error(exc))}") from None
    return out


def _plain(text: str) -> str:
    import re

    return " ".join(re.sub(r"\[/?[a-z ]+\]", "", text).split())


def check_policies_load(specs: Sequence[Any], env_cfg: Any, device: str) -> None:
    """Build every policy once in the main process, so a checkpoint of the wrong format or a
    class that rejects its ``kw.`` options is one usage error now, not a failure per episode."""
    from mettagrid.policy.loader import PolicyEnvInterface, initialize_or_load_policy

    env_interface = PolicyEnvInterface.from_mg_cfg(env_cfg)
    for spec in specs:
        try:
            initialize_or_load_policy(env_interface, spec.to_policy_spec(), device_override=device)
        except ModuleNotFoundError as exc:
            missing = getattr(exc, "name", "") or ""
            hint = ""
            if missing.split(".")[0] in ("pufferlib", "einops", "torch"):
                hint = " (neural policies need upstream's neural extra; see docs/cogames-parallel.md)"
            raise UpstreamError(
                f"policy {spec.class_path}: cannot load: {_plain(_translate(exc))}{hint}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any loader error is the user's input
            if "Invalid symbol name" in str(exc):
                raise UpstreamError(
                    f"policy {spec.class_path}: {_plain(_translate(exc))} "
                    "(run `cogames policies` to list the short names)"
                ) from None
            where = f" from {spec.data_path}" if spec.data_path else ""
            raise UpstreamError(
                f"policy {spec.class_path}{where} cannot be loaded: {type(exc).__name__}: "
                f"{_short(exc)}"
            ) from None


def _translate(exc: BaseException) -> str:
    from cogames.cli.policy import _translate_error

    return _translate_error(exc)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class UpstreamTask:
    """One episode of one real mission; picklable (workers rebuild the policies from specs)."""

    index: int
    mission_index: int
    mission: str
    episode: int
    seed: int
    assignment: tuple[int, ...]
    env_cfg: Any
    policy_specs: tuple[Any, ...]  # mettagrid PolicySpec, without proportions
    device: str | None
    action_timeout_ms: int
    replay_path: str | None = None
    episode_timeout_s: float | None = None

    @property
    def env_seed(self) -> int:
        return self.seed

    def failed(self, error: str) -> UpstreamResult:
        return UpstreamResult(
            index=self.index,
            mission=self.mission,
            episode=self.episode,
            seed=self.seed,
            assignment=self.assignment,
            status="failed",
            error=error,
        )


@dataclass
class UpstreamResult:
    """Outcome of one :class:`UpstreamTask`: upstream's ``EpisodeRolloutResult`` or an error."""

    index: int
    mission: str
    episode: int
    seed: int
    assignment: tuple[int, ...]
    status: str = "ok"
    rollout: Any = None  # mettagrid EpisodeRolloutResult
    error: str | None = None
    traceback: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def steps(self) -> int:
        return int(self.rollout.steps) if self.rollout is not None else 0


@dataclass
class UpstreamPlan:
    missions: list[tuple[str, Any]]
    specs: list[Any]  # PolicySpecWithProportion
    tasks: list[UpstreamTask]
    device: str
    episodes: int
    seed: int


def plan_tasks(
    missions: Sequence[tuple[str, Any]],
    specs: Sequence[Any],
    *,
    episodes: int,
    seed: int,
    action_timeout_ms: int,
    device: str,
    replay_dir: str | os.PathLike | None = None,
    episode_timeout_s: float | None = None,
) -> list[UpstreamTask]:
    """Every episode's assignment and seed, exactly as upstream's sequential loop draws them.

    Upstream shuffles one list in place with one ``random.Random(seed)`` per mission before
    each episode, and seeds episode ``k`` with ``seed + k``; replaying that here, in the main
    process, is what lets the episodes run anywhere in any order with the same results.
    """
    from metta_alo.scoring import allocate_counts, validate_proportions

    proportions = [s.proportion for s in specs]
    try:
        validate_proportions(proportions, len(specs))
    except ValueError as exc:
        raise UpstreamError(str(exc)) from None
    plain = tuple(s.to_policy_spec() for s in specs)
    tasks: list[UpstreamTask] = []
    for mi, (name, env_cfg) in enumerate(missions):
        counts = allocate_counts(env_cfg.game.num_agents, proportions)
        assignment = [i for i, c in enumerate(counts) for _ in range(c)]
        rng = random.Random(seed)
        for ep in range(episodes):
            rng.shuffle(assignment)
            replay = None
            if replay_dir is not None:
                safe = name.replace("/", "_").replace(":", "_")
                replay = str(Path(replay_dir) / f"{safe}.ep{ep:04d}.json.z")
            tasks.append(
                UpstreamTask(
                    index=len(tasks),
                    mission_index=mi,
                    mission=name,
                    episode=ep,
                    seed=seed + ep,
                    assignment=tuple(assignment),
                    env_cfg=env_cfg,
                    policy_specs=plain,
                    device=device,
                    action_timeout_ms=int(action_timeout_ms),
                    replay_path=replay,
                    episode_timeout_s=(
                        episode_timeout_s
                        if episode_timeout_s is not None
                        else default_episode_timeout_s(env_cfg, action_timeout_ms)
                    ),
                )
            )
    return tasks


def default_episode_timeout_s(env_cfg: Any, action_timeout_ms: float) -> float:
    """A bound no honest episode reaches: every agent late on every step, twice over, + 60 s."""
    agents, steps = int(env_cfg.game.num_agents), int(env_cfg.game.max_steps)
    return 60.0 + 2.0 * steps * agents * action_timeout_ms / 1000.0


def run_task(task: UpstreamTask, agents: Any = None) -> UpstreamResult:
    """Run one episode through upstream's ``run_episode_local`` (or, with ``agents`` (a
    :class:`~cogames_parallel.real_agents.RealWorkerAgents`), through the same rollout with
    the policies on agent workers); errors become a failed result."""
    try:
        from mettagrid.runner.rollout import run_episode_local
        from mettagrid.simulator.multi_episode.rollout import EpisodeRolloutResult

        from cogames_parallel.watchdog import Hung, deadline

        replay_path = Path(task.replay_path) if task.replay_path else None
        limit = task.episode_timeout_s
        try:
            with deadline(
                limit,
                f"episode did not finish within --episode-timeout-s {limit:g} s "
                "(a policy that never returns?); stopped",
            ):
                if agents is not None:
                    from cogames_parallel.real_agents import run_episode_on_workers

                    res = run_episode_on_workers(task, agents)
                else:
                    res, _ = run_episode_local(
                        policy_specs=list(task.policy_specs),
                        assignments=list(task.assignment),
                        env=task.env_cfg,
                        results_path=None,
                        replay_path=replay_path,
                        seed=task.seed,
                        max_action_time_ms=task.action_timeout_ms,
                        device=task.device,
                    )
        except Hung as exc:
            return task.failed(str(exc))
        finally:
            if agents is not None:  # outside the deadline: stuck workers are replaced here
                agents.end()
        rollout = EpisodeRolloutResult(
            assignments=list(task.assignment),
            rewards=list(res.rewards),
            action_timeouts=list(res.action_timeouts),
            stats=res.stats,
            replay_path=str(replay_path) if replay_path else None,
            steps=res.steps,
            max_steps=task.env_cfg.game.max_steps,
            time_averaged_game_stats=res.time_averaged_game_stats,
        )
    except Exception as exc:  # noqa: BLE001 - reported per episode, never as zeros
        from cogames_parallel.rollout import one_line, trimmed_traceback

        text = one_line(exc)  # an EpisodeError's message already says what happened
        result = task.failed(text if len(text) <= 300 else text[:297] + "...")
        result.traceback = getattr(exc, "worker_traceback", None) or trimmed_traceback(exc)
        return result
    return UpstreamResult(
        index=task.index,
        mission=task.mission,
        episode=task.episode,
        seed=task.seed,
        assignment=task.assignment,
        rollout=rollout,
    )


# --------------------------------------------------------------------------- output


def summarize(plan: UpstreamPlan, results: Sequence[UpstreamResult]) -> tuple[dict[str, Any], list]:
    """Upstream's JSON document (``missions[].mission_summary``) from results in task order.

    Returns ``(document, summaries)``. With every episode ok the document is exactly what
    upstream ``cogames run --format json`` prints; failed episodes are left out of the
    averages (``episodes`` counts the ones that finished, the keys of
    ``per_episode_per_policy_avg_rewards`` stay the episode numbers) and listed under an
    extra top-level ``failed`` key, never turned into zeros.
    """
    from mettagrid.simulator.multi_episode.rollout import MultiEpisodeRolloutResult
    from mettagrid.simulator.multi_episode.summary import build_multi_episode_rollout_summaries

    by_index = {r.index: r for r in results}
    doc_missions = []
    summaries = []
    failed = []
    for mi, (name, _cfg) in enumerate(plan.missions):
        mine = [t for t in plan.tasks if t.mission_index == mi]
        ok = [by_index[t.index] for t in mine if t.index in by_index and by_index[t.index].ok]
        for t in mine:
            r = by_index.get(t.index)
            if r is None or not r.ok:
                entry = {
                    "mission": name,
                    "episode": t.episode,
                    "seed": t.seed,
                    "error": r.error if r is not None else "no result came back for this episode",
                }
                if r is not None and r.traceback:
                    entry["traceback"] = r.traceback
                failed.append(entry)
        if not ok:
            summaries.append(None)
            doc_missions.append({"mission_name": name, "mission_summary": None})
            continue
        (summary,) = build_multi_episode_rollout_summaries(
            [MultiEpisodeRolloutResult(episodes=[r.rollout for r in ok])], num_policies=len(plan.specs)
        )
        if len(ok) != len(mine):  # keep the real episode numbers as keys
            summary.per_episode_per_policy_avg_rewards = {
                r.episode: summary.per_episode_per_policy_avg_rewards[k] for k, r in enumerate(ok)
            }
        summaries.append(summary)
        doc_missions.append(
            {"mission_name": name, "mission_summary": summary.model_dump(mode="json")}
        )
    doc: dict[str, Any] = {"missions": doc_missions}
    if failed:
        doc["failed"] = failed
    return doc, summaries


def render(doc: dict[str, Any], fmt: str) -> str:
    """Serialise as upstream does (``json.dumps(indent=2)`` / ``yaml.safe_dump``), newline-terminated."""
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(doc, sort_keys=False) + "\n"


def print_tables(plan: UpstreamPlan, summaries: list, console) -> None:
    """Upstream's own tables (assignments, game stats, per-policy stats, rewards, timeouts)."""
    from cogames.evaluate import _output_results

    pairs = [(n, s) for (n, _), s in zip(plan.missions, summaries) if s is not None]
    if pairs:
        _output_results(
            console,
            [s.to_policy_spec() for s in plan.specs],
            [n for n, _ in pairs],
            [s for _, s in pairs],
            None,
        )


def upstream_cli_command() -> list[str]:
    """How to run upstream's own ``cogames`` CLI from here (tests and the benchmark use it)."""
    return [sys.executable, "-m", "cogames"]
