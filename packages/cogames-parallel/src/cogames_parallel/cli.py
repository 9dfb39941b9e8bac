"""``cogames``: evaluate mixes of policies on cooperative multi-agent missions.

A thin shell: parse flags, build the plan, run it on the chosen runner, print. Real
CoGames missions (``-m cogames:<mission>``, needs the ``upstream`` extra) go through
:mod:`cogames_parallel.upstream`; subcommands we do not implement (play, replay, login,
...) are handed to upstream CoGames' own CLI (:mod:`cogames_parallel.coexist`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from parallel_core.cli import ArgumentParser, CliError, UsageError, run_cli, smoke_mode

EVAL_EXAMPLES = """\
examples:
  cogames eval -m cogames:arena -p starter -e 4 --jobs 2 --format json   (real CoGames)
  cogames eval -m 'cogames:tutorial.*' -p class=random,proportion=3 -p starter -s 200
  cogames eval -m harvest.open -p greedy -p random --episodes 4
  cogames eval -m 'harvest.*' -v small -p greedy:3 -p random:1 --jobs 2 --format json
  cogames eval -m delivery.open -p class=busy,kw.work=20000 -c 4 --jobs 2 --parallel-policy
  cogames eval -m my_mission.yaml -p class=mlp,data=mlp.pt -p greedy
  mpirun -n 4 cogames eval -m 'assembly.*' -p greedy -e 40 --backend mpi --format json
"""

DEFAULT_MISSIONS = ["harvest.open"]
DEFAULT_POLICIES = ["greedy", "random"]
OUR_COMMANDS = ("eval", "run", "missions", "policies", "imitate")
# PARALLEL_RL_SMOKE=1: documented commands finish in seconds
SMOKE_EPISODES = 2
DEFAULT_EPISODES = 10
DEFAULT_JOB_EPISODES = 2  # `cogames` alone on a real mission: 2 x 1000 steps x 8 agents
SMOKE_STEPS = 20


def _eval_parser(sub) -> argparse.ArgumentParser:
    for name in ("eval", "run"):
        p = sub.add_parser(
            name,
            help="evaluate policies on missions" + (" (alias of eval)" if name == "run" else ""),
            description="Evaluate a mix of policies on missions, many episodes each. "
            "Data goes to stdout (--format), status and progress to stderr.",
            epilog=EVAL_EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "-m",
            "--mission",
            action="append",
            metavar="MISSION",
            help="cogames:NAME for a real CoGames mission (wildcards: 'cogames:tutorial.*'), or one "
            "of ours: name, shell wildcard ('harvest.*'), .py/.yaml file or module:factory "
            f"(repeatable; default cogames:arena with upstream installed, else {DEFAULT_MISSIONS[0]})",
        )
        p.add_argument(
            "-p",
            "--policy",
            action="append",
            metavar="SPEC",
            help="class=NAME_OR_PATH[,data=FILE][,proportion=N][,kw.KEY=VALUE], NAME or NAME:N; "
            "for real missions any upstream spec (short names, checkpoint dirs/bundles) "
            f"(repeatable; default starter for real missions, else {' '.join(DEFAULT_POLICIES)})",
        )
        p.add_argument(
            "--device",
            default="auto",
            help="policy device for real CoGames policies, as upstream (auto, cpu, cuda, cuda:0)",
        )
        p.add_argument("-c", "--cogs", type=int, help="number of agents (overrides the mission's)")
        p.add_argument(
            "-v", "--variant", action="append", default=[], help="mission variant (repeatable)"
        )
        p.add_argument(
            "-e",
            "--episodes",
            type=int,
            help=f"episodes per mission (default 10; {DEFAULT_JOB_EPISODES} for the default job)",
        )
        p.add_argument(
            "-s", "--steps", type=int, help="max steps per episode (overrides the mission's)"
        )
        p.add_argument(
            "--seed", type=int, default=42, help="root seed of every episode/agent stream (42)"
        )
        p.add_argument("--map-seed", type=int, help="fixed map layout for every episode")
        p.add_argument(
            "--action-timeout-ms",
            type=float,
            default=250.0,
            help="late actions become no-ops and are counted (default 250; 0 disables)",
        )
        p.add_argument(
            "--episode-timeout-s",
            type=float,
            help="real missions: stop an episode that runs longer than this and report it "
            "failed (default: 60 + 2 x steps x agents x the action timeout)",
        )
        p.add_argument(
            "-j",
            "--jobs",
            type=int,
            default=0,
            help="total worker processes (0 = serial; capped at the cores available)",
        )
        p.add_argument(
            "--parallel-policy",
            action="store_true",
            help="compute each step's agents on persistent per-agent worker processes",
        )
        p.add_argument(
            "--agent-workers",
            type=int,
            help="with --parallel-policy: agent workers per episode (default: one per agent, "
            "within the --jobs budget)",
        )
        p.add_argument(
            "--backend",
            choices=("local", "mpi"),
            default="local",
            help="mpi: spread (mission, episode) tasks over the ranks of mpirun",
        )
        p.add_argument(
            "--format", choices=("yaml", "json"), help="print the data as YAML/JSON on stdout"
        )
        p.add_argument(
            "-o",
            "--output",
            type=Path,
            help="also write the data (--format, default json) to this file",
        )
        p.add_argument(
            "--save-replay-dir",
            type=Path,
            help="write one replay per episode to this directory (real missions: upstream's "
            ".json.z replays, which `cogames replay` opens)",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or status lines")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="cogames",
        description="Parallel multi-agent policy evaluation on cooperative missions. "
        "With no command, runs a default evaluation (starter on cogames:arena with upstream "
        "CoGames installed, else greedy vs random on harvest.open). Other subcommands "
        "(play, replay, login, ...) are handed to upstream CoGames' own CLI.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    _eval_parser(sub)
    m = sub.add_parser("missions", help="list missions and variants")
    m.add_argument(
        "-m", "--mission", action="append", help="also load these (files, module:factory)"
    )
    sub.add_parser(
        "policies", help="list registered policy short names"
    )
    im = sub.add_parser(
        "imitate",
        help="train an MLP policy by cloning a scripted one (writes a file for -p class=mlp,data=FILE)",
        epilog="example:\n  cogames imitate -m harvest.open -o mlp.pt && "
        "cogames eval -m harvest.open -p class=mlp,data=mlp.pt -p random",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    im.add_argument("-m", "--mission", action="append", required=True)
    im.add_argument("-v", "--variant", action="append", default=[])
    im.add_argument("-c", "--cogs", type=int)
    im.add_argument("-p", "--teacher", default="greedy", help="policy to clone (default greedy)")
    im.add_argument("-e", "--episodes", type=int, default=8)
    im.add_argument("--hidden", type=int, default=64)
    im.add_argument("--epochs", type=int, default=30)
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("-o", "--output", type=Path, required=True)
    return parser


def cmd_missions(args) -> int:
    from cogames_parallel.missions import BUILTIN_MISSIONS, COMMON_VARIANTS, resolve_missions

    missions = list(BUILTIN_MISSIONS.values()) + (
        resolve_missions(args.mission) if args.mission else []
    )
    t = Table(title="Missions")
    for col in ("mission", "agents", "max steps", "source", "description"):
        t.add_column(col)
    for m in missions:
        t.add_row(m.name, str(m.num_agents), str(m.max_steps), m.source, m.description)
    console = Console()
    console.print(t)
    v = Table(title="Variants of the built-in missions (-v NAME, repeatable, applied in order)")
    v.add_column("variant")
    v.add_column("changes")
    for name, change in COMMON_VARIANTS.items():
        desc = (
            ", ".join(f"{k}={val}" for k, val in change.items())
            if isinstance(change, dict)
            else {"scarce": "resource_density / 3", "abundant": "resource_density x 2"}.get(
                name, ""
            )
        )
        v.add_row(name, desc)
    console.print(v)
    for m in missions:
        if m.source != "builtin" and m.variants:
            console.print(f"{m.name} variants: {', '.join(m.variants)}")
    return _upstream_listing(console, "missions", "Real CoGames missions: use -m cogames:NAME")


def cmd_policies(args) -> int:
    from cogames_parallel.policies import registered_policies
    from cogames_parallel.policies.spec import resolve_policy_class

    t = Table(title="Registered policies (-p NAME, or -p class=module:Class for your own)")
    t.add_column("name")
    t.add_column("class")
    t.add_column("description")
    for name, path in registered_policies().items():
        doc = ""
        if not path.startswith("cogames_parallel.policies.mlp"):  # do not import torch to list
            doc = (resolve_policy_class(name).__doc__ or "").strip().split("\n")[0]
        else:
            doc = "torch MLP loaded from data=FILE (make one with `cogames imitate`)"
        t.add_row(name, path, doc)
    console = Console()
    console.print(t)
    return _upstream_listing(
        console, "policies", "Real CoGames policies (with -m cogames:...): upstream's short names"
    )


def _upstream_listing(console: Console, command: str, title: str) -> int:
    """Append upstream CoGames' own listing (missions/policies), when it is installed."""
    from cogames_parallel import upstream
    from cogames_parallel.coexist import run_upstream

    if not upstream.installed():
        console.print(
            "[dim]Real CoGames missions and policies: pip install 'cogames-parallel[upstream]'[/dim]"
        )
        return 0
    console.print(f"\n[bold]{title}[/bold]")
    return run_upstream([command])


def cmd_imitate(args) -> int:
    import numpy as np

    from cogames_parallel.agent_workers import AgentGroup
    from cogames_parallel.evaluate import make_plan
    from cogames_parallel.missions.loading import build_mission
    from cogames_parallel.policies.base import PolicyEnvInfo
    from cogames_parallel.policies.mlp import behaviour_clone, save_mlp

    plan = make_plan(
        args.mission,
        [args.teacher],
        variants=args.variant,
        cogs=args.cogs,
        episodes=args.episodes,
        seed=args.seed,
        action_timeout_ms=0,
    )
    xs, ys = [], []
    for task in plan.tasks:  # serial on purpose: data collection is cheap next to training
        env = build_mission(task.mission).make_env()
        obs, _ = env.reset(seed=task.env_seed)
        names = list(env.possible_agents)
        info = PolicyEnvInfo(
            task.mission.label(),
            env.observation_space(names[0]),
            env.action_space(names[0]),
            len(names),
        )
        group = AgentGroup()
        group.begin(task, info, range(len(names)))
        while env.agents:
            slots = list(range(len(names)))
            acts, _ = group.act(slots, [obs[n] for n in names])
            xs.append(np.stack([obs[n] for n in names]))
            ys.append(np.asarray(acts))
            obs, *_ = env.step(dict(zip(names, acts)))
    x, y = np.concatenate(xs), np.concatenate(ys)
    n_actions = int(info.num_actions)
    net, acc = behaviour_clone(
        x, y, n_actions, hidden=args.hidden, epochs=args.epochs, seed=args.seed
    )
    save_mlp(args.output, net, x.shape[1], args.hidden, n_actions)
    print(
        f"cogames: cloned {args.teacher} from {len(x)} samples (train accuracy {acc:.3f}) -> {args.output}",
        file=sys.stderr,
    )
    return 0


def _check_common(args) -> None:
    for name in ("episodes", "jobs"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise UsageError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.agent_workers is not None and args.agent_workers < 1:
        raise UsageError(f"--agent-workers must be >= 1, got {args.agent_workers}")
    # fail before the evaluation, not after it has run for hours
    if args.output is not None and args.output.is_dir():
        raise UsageError(f"-o/--output {args.output} is a directory; give a file name")
    if args.save_replay_dir is not None and args.save_replay_dir.exists():
        if not args.save_replay_dir.is_dir():
            raise UsageError(
                f"--save-replay-dir {args.save_replay_dir} exists and is not a directory"
            )


def _apply_defaults(args) -> bool:
    """Fill in the default mission/policies and smoke-mode sizes; True for real CoGames missions."""
    from cogames_parallel import upstream

    missions = args.mission or []
    real = [m for m in missions if upstream.is_upstream(m)]
    if real and len(real) != len(missions):
        raise UsageError(
            "real CoGames missions (cogames:...) and our own missions cannot be mixed in one run; "
            "evaluate them separately"
        )
    if not missions and not args.policy and upstream.installed():
        args.mission, args.policy = [upstream.DEFAULT_MISSION], [upstream.DEFAULT_POLICY]
        if args.episodes is None:
            args.episodes = DEFAULT_JOB_EPISODES
    elif not missions and upstream.installed() and any(
        not _is_ours_policy(p) for p in args.policy
    ):
        args.mission = [upstream.DEFAULT_MISSION]
    elif not missions:
        args.mission = list(DEFAULT_MISSIONS)
    is_real = upstream.is_upstream(args.mission[0])
    if args.episodes is None:
        args.episodes = DEFAULT_EPISODES
    if not args.policy:
        args.policy = [upstream.DEFAULT_POLICY] if is_real else list(DEFAULT_POLICIES)
    if smoke_mode():
        args.episodes = min(args.episodes, SMOKE_EPISODES)
        args.steps = min(args.steps or SMOKE_STEPS, SMOKE_STEPS)
    return is_real


def _is_ours_policy(spec: str) -> bool:
    from cogames_parallel.policies.base import registry_entry

    name = spec.split(",")[0].removeprefix("class=").rsplit(":", 1)[0]
    return registry_entry(name) is not None or ":" in name or name.endswith(".py")


def _mpi_context(args):
    from cogames_parallel.evaluate import warn

    if args.backend != "mpi":
        return None
    from parallel_core.mpi import get_context

    ctx = get_context()
    if not ctx.is_distributed and not args.quiet and ctx.is_root:
        warn("--backend mpi outside mpirun: running everything on this one rank")
    return ctx


C_INT_MAX = 2**31 - 1


class Checkpoint:
    """With ``-o FILE``: while the run goes on, FILE holds every episode finished so far
    (rewritten atomically, temp file + rename), so a run that dies (a killed MPI rank makes
    ``mpirun`` kill them all) keeps what it finished. The document is the final one's,
    with the unfinished episodes listed under ``failed`` and a top-level ``partial`` note;
    the final write replaces it. Writing costs a summary of everything so far, so it is
    skipped while the time since the last write is under 10x what that write took."""

    def __init__(self, path, render_doc, total: int) -> None:
        self.path, self.render_doc, self.total = path, render_doc, total
        self.results: dict[int, object] = {}
        self.next_at = 0.0
        self.dirty = False

    def add(self, result) -> None:
        self.update([result])

    def update(self, results) -> None:
        """Add ``results``; write now if due (call with none to write a deferred one)."""
        for r in results:
            self.results[r.index] = r
            self.dirty = True
        if self.dirty and time.monotonic() >= self.next_at and len(self.results) < self.total:
            self.write()

    def write(self) -> None:
        from parallel_core.io import atomic_write

        start = time.monotonic()
        done = sorted(self.results.values(), key=lambda r: r.index)
        note = f"{len(done)} of {self.total} episodes finished when this was written; run unfinished"
        with atomic_write(self.path, mode="w") as f:
            f.write(self.render_doc(done, note))
        self.next_at = time.monotonic() + 10 * (time.monotonic() - start)
        self.dirty = False


def _on_result(bar, checkpoint: Checkpoint | None, backend: str):
    def on_result(result) -> None:
        bar.advance(1)
        if checkpoint is not None and backend != "mpi":  # under MPI rank 0 feeds it
            checkpoint.add(result)

    return on_result


def _clip(value: object, limit: int = 40) -> str:
    """A value for an error message, never thousands of characters long."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:20]}...({len(text)} digits)"


def cmd_eval_upstream(args) -> int:
    """``-m cogames:<mission>``: upstream's missions, policies, rollout and summary; our runners."""
    from cogames_parallel import upstream
    from cogames_parallel.evaluate import make_runner, warn, worker_layout
    from parallel_core.io import atomic_write
    from parallel_core.progress import progress_bar

    upstream.require_installed()
    if args.action_timeout_ms < 1:
        raise UsageError(
            f"--action-timeout-ms must be >= 1 for real CoGames missions, got {args.action_timeout_ms:g}"
        )
    if args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    for flag, value, top in (
        ("--seed", args.seed, C_INT_MAX - args.episodes + 1),  # episode k runs seed + k
        ("--map-seed", args.map_seed, C_INT_MAX),
    ):
        if value is not None and not 0 <= value <= top:
            raise UsageError(
                f"{flag} must be between 0 and {top} (mettagrid takes a C int), got {_clip(value)}"
            )
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"-s/--steps must be >= 1, got {args.steps}")
    if args.episode_timeout_s is not None and not args.episode_timeout_s > 0:
        raise UsageError(f"--episode-timeout-s must be > 0, got {args.episode_timeout_s:g}")
    if args.cogs is not None and args.cogs < 1:
        raise UsageError(f"-c/--cogs must be >= 1, got {args.cogs}")
    ctx = _mpi_context(args)
    is_root = ctx is None or ctx.is_root
    status = is_root and not args.quiet
    device = upstream.resolve_device(args.device, quiet=not status)
    missions = upstream.resolve_missions(
        args.mission, variants=args.variant, cogs=args.cogs, steps=args.steps, map_seed=args.map_seed
    )
    if args.cogs is not None:
        upstream.check_cogs_fit(missions, args.seed)
    specs = upstream.parse_policies(args.policy, device)
    upstream.check_policies_load(specs, missions[0][1], device)
    tasks = upstream.plan_tasks(
        missions,
        specs,
        episodes=args.episodes,
        seed=args.seed,
        action_timeout_ms=int(args.action_timeout_ms),
        device=device,
        replay_dir=args.save_replay_dir,
        episode_timeout_s=args.episode_timeout_s,
    )
    plan = upstream.UpstreamPlan(missions, specs, tasks, device, args.episodes, args.seed)
    jobs = args.jobs
    if ctx is not None and ctx.is_distributed and jobs > ctx.local_workers:
        jobs = ctx.local_workers
    n_local = len(tasks) if ctx is None else len(ctx.scatter_work(tasks))
    max_agents = max(int(cfg.game.num_agents) for _, cfg in missions)
    layout = worker_layout(jobs, n_local, max_agents, args.parallel_policy, args.agent_workers)
    for note in layout.notes:
        if status:
            warn(note)
    if status:
        ranks = f" on {ctx.size} MPI ranks," if ctx is not None and ctx.is_distributed else ""
        print(
            f"cogames: {len(missions)} CoGames mission(s) x {args.episodes} episodes = "
            f"{len(tasks)} episodes;{ranks} {layout.describe()}, device {device}",
            file=sys.stderr,
        )
    if args.save_replay_dir is not None:
        args.save_replay_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if args.output is not None and is_root:

        def partial_doc(done, note):
            doc, _ = upstream.summarize(plan, done)
            return upstream.render({**doc, "partial": note}, args.format or "json")

        checkpoint = Checkpoint(args.output, partial_doc, len(tasks))
    t0 = time.perf_counter()
    with make_runner(layout, args.backend, ctx, checkpoint and checkpoint.update) as runner:
        with progress_bar(n_local, "episodes", quiet=not status) as bar:
            results = runner.run(tasks, on_result=_on_result(bar, checkpoint, args.backend))
    wall = time.perf_counter() - t0
    code = 0
    if is_root:
        doc, summaries = upstream.summarize(plan, results)
        if args.format:
            sys.stdout.write(upstream.render(doc, args.format))
            sys.stdout.flush()
        else:
            upstream.print_tables(plan, summaries, Console())
        if args.output is not None:
            with atomic_write(args.output, mode="w") as f:
                f.write(upstream.render(doc, args.format or "json"))
        failed = doc.get("failed", [])
        if failed:
            first = failed[0]
            print(
                f"cogames: error: {len(failed)} of {len(tasks)} episodes failed; first: "
                f"{first['mission']} episode {first['episode']}: {first['error']}",
                file=sys.stderr,
            )
            code = 1
        elif status:
            steps = sum(r.steps for r in results)
            print(
                f"cogames: {len(tasks)} episodes, {steps} steps in {wall:.2f} s "
                f"({steps / max(wall, 1e-9):.0f} env steps/s)",
                file=sys.stderr,
            )
        if args.save_replay_dir is not None and status and not failed:
            print(
                f"cogames: replays in {args.save_replay_dir}; watch one with: "
                f"cogames replay {tasks[0].replay_path}",
                file=sys.stderr,
            )
    if ctx is not None:
        code = ctx.bcast(code, root=0)
    return code


def cmd_eval(args) -> int:
    _check_common(args)
    if _apply_defaults(args):
        return cmd_eval_upstream(args)
    from cogames_parallel.evaluate import (
        make_plan,
        plan_tasks_for_run,
        prepare_runner,
        warn,
        worker_layout,
    )
    from cogames_parallel.report import print_tables, render
    from cogames_parallel.summary import summarize
    from parallel_core.io import atomic_write
    from parallel_core.progress import progress_bar

    ctx = _mpi_context(args)
    is_root = ctx is None or ctx.is_root
    plan = make_plan(
        args.mission,
        args.policy,
        variants=args.variant,
        cogs=args.cogs,
        steps=args.steps,
        episodes=args.episodes,
        seed=args.seed,
        map_seed=args.map_seed,
        action_timeout_ms=args.action_timeout_ms,
    )
    max_agents = max(m.num_agents for _, m in plan.missions)
    jobs = args.jobs
    if ctx is not None and ctx.is_distributed and jobs > ctx.local_workers:
        # every rank on a node spends its own budget: share the node's cores between them
        if is_root and not args.quiet:
            warn(
                f"--jobs {jobs} per rank capped to {ctx.local_workers} ({ctx.local_size} ranks share this node)"
            )
        jobs = ctx.local_workers
    n_local = len(plan.tasks) if ctx is None else len(ctx.scatter_work(plan.tasks))
    layout = worker_layout(jobs, n_local, max_agents, args.parallel_policy, args.agent_workers)
    status = is_root and not args.quiet
    for note in layout.notes:
        if status:
            warn(note)
    if status:
        ranks = f" on {ctx.size} MPI ranks," if ctx is not None and ctx.is_distributed else ""
        print(
            f"cogames: {len(plan.missions)} mission(s) x {args.episodes} episodes = {len(plan.tasks)} "
            f"episodes;{ranks} {layout.describe()}",
            file=sys.stderr,
        )
    if args.save_replay_dir is not None:
        args.save_replay_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if args.output is not None and is_root:

        def partial_doc(done, note):
            data = summarize(plan.missions, plan.policies, plan.tasks, done, plan.config)
            return render({**data, "partial": note}, args.format or "json")

        checkpoint = Checkpoint(args.output, partial_doc, len(plan.tasks))
    t0 = time.perf_counter()
    tasks = plan_tasks_for_run(plan, args.save_replay_dir)
    # workers start before the progress bar's thread exists, so they can be forked
    with prepare_runner(plan, layout, args.backend, ctx, checkpoint and checkpoint.update) as runner:
        with progress_bar(n_local, "episodes", quiet=not status) as bar:
            results = runner.run(tasks, on_result=_on_result(bar, checkpoint, args.backend))
    wall = time.perf_counter() - t0
    code = 0
    if is_root:
        data = summarize(plan.missions, plan.policies, plan.tasks, results, plan.config)
        steps = sum(ep.get("steps", 0) for ep in data["episodes"])
        if args.format:
            sys.stdout.write(render(data, args.format))
        else:
            print_tables(data, Console())
        if args.output is not None:
            with atomic_write(args.output, mode="w") as f:
                f.write(render(data, args.format or "json"))
        if data["failed"]:
            first = data["failed"][0]
            print(
                f"cogames: error: {len(data['failed'])} of {len(plan.tasks)} episodes failed; first: "
                f"{first['mission']} episode {first['episode']}: {first['error']}",
                file=sys.stderr,
            )
            code = 1
        elif status:
            print(
                f"cogames: {len(plan.tasks)} episodes, {steps} steps in {wall:.2f} s "
                f"({steps / max(wall, 1e-9):.0f} env steps/s)",
                file=sys.stderr,
            )
    if ctx is not None:
        code = ctx.bcast(code, root=0)
    return code


def _is_root(args) -> bool:
    """False on the non-root ranks of an ``--backend mpi`` run (they stay quiet)."""
    if getattr(args, "backend", "local") != "mpi":
        return True
    from parallel_core.mpi import get_context

    return get_context().is_root


def _forward(argv: list[str]) -> int:
    """A subcommand we do not implement: upstream CoGames' CLI runs it, if it is installed."""
    from cogames_parallel import upstream
    from cogames_parallel.coexist import run_upstream

    if not upstream.installed():
        raise UsageError(
            f"'{argv[0]}' is not a cogames-parallel command (ours: {', '.join(OUR_COMMANDS)}); "
            "upstream CoGames has more: pip install 'cogames-parallel[upstream]'"
        )
    return run_upstream(argv)


def _dispatch(args) -> int:
    from cogames_parallel import upstream
    from cogames_parallel.missions.base import MissionError
    from cogames_parallel.policies.base import PolicyError

    try:
        if args.command == "missions":
            return cmd_missions(args)
        if args.command == "policies":
            return cmd_policies(args)
        if args.command == "imitate":
            return cmd_imitate(args)
        return cmd_eval(args)
    except (MissionError, PolicyError, upstream.UpstreamError, UsageError) as exc:
        if not _is_root(args):  # every MPI rank finds the same bad input: say it once
            return 2
        raise UsageError(str(exc)) from None
    except OSError as exc:  # an output/replay path that cannot be written, say
        if exc.filename:
            raise CliError(f"{exc.strerror or exc}: {exc.filename}") from None
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in OUR_COMMANDS:
        return run_cli("cogames", lambda: _forward(argv))
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["eval", *argv]  # bare `cogames [flags]` is an eval
    args = parser.parse_args(argv)
    code = run_cli(
        "cogames", lambda: _dispatch(args), interrupted="interrupted; worker processes stopped"
    )
    _exit_past_hung_threads(code)
    return code


def _exit_past_hung_threads(code: int) -> None:
    """After a pre-empted hang, a stuck policy thread may remain; do not wait for it at exit."""
    import os
    import threading

    from cogames_parallel import watchdog

    if watchdog.fired and threading.active_count() > 1:
        if threading.current_thread() is threading.main_thread() and not _in_pytest():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _in_pytest() -> bool:
    return "pytest" in sys.modules


if __name__ == "__main__":
    sys.exit(main())
