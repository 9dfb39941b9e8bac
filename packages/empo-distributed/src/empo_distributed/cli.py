"""``empo-prior``: compute the EMPO Phase 1 human policy prior of a world.

A thin shell: parse flags, load the world, call :func:`compute_human_policy_prior`,
write the prior (rank 0, atomically) and print a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time

EXAMPLES = """examples:
  empo-prior                                    # small built-in world, summary only
  empo-prior --list-worlds
  empo-prior --world large --max-steps 10 --beta-h 10 --gamma-h 0.9 --workers 2 --output prior.npz
  mpirun -n 4 empo-prior --world huge --output prior.npz      # 4 MPI ranks, one file
  empo-prior --world huge --mpi-simulate-nodes 2 --workers 1  # real MPI path on one machine
  empo-prior --world my.map --output prior.npz                # a map file (format: docs/empo-distributed.md)
  empo-prior --world mymodule:make_world                      # any EMPO WorldModel factory

read the result with:  from empo_distributed import load_prior
                        prior = load_prior("prior.npz"); prior(state, human, goal_id)
"""


def _checked(convert, expected: str, is_valid, rule: str):
    """An argparse ``type``: convert the text, then check it, each failure one clear line."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not is_valid(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_positive_int = _checked(int, "an integer", lambda v: v >= 1, ">= 1")
_nonneg_int = _checked(int, "an integer", lambda v: v >= 0, ">= 0")
_beta = _checked(float, "a number or 'inf'", lambda v: v >= 0, ">= 0 (or inf)")  # NaN fails too
_gamma = _checked(float, "a number in (0, 1]", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
_rho = _checked(float, "a number >= 0", lambda v: 0.0 <= v < math.inf, "a finite number >= 0")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    return int(float(t[: len(t) - len(unit)]) * _UNITS[unit])


_memory_size = _checked(_parse_size, "a size such as 8G or 500M", lambda v: v > 0, "> 0")


def build_parser() -> argparse.ArgumentParser:
    """The ``empo-prior`` argument parser (usage errors: one line, exit code 2)."""
    from parallel_core.cli import ArgumentParser, add_quiet_flag

    p = ArgumentParser(
        prog="empo-prior",
        description="EMPO Phase 1: build the state DAG of a world and compute the goal-conditioned "
        "Boltzmann human policy prior by backward induction (serial, local processes, MPI).",
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--world",
        default="small",
        help="built-in world name, map file, or module:factory (default: small)",
    )
    p.add_argument(
        "--max-steps", type=_positive_int, default=None, help="horizon (default: the world's)"
    )
    p.add_argument(
        "--beta-h",
        type=_beta,
        default=10.0,
        help="human inverse temperature, 'inf' = argmax (default 10)",
    )
    disc = p.add_mutually_exclusive_group()
    disc.add_argument(
        "--gamma-h", type=_gamma, default=None, help="human per-step discount in (0, 1] (default 1)"
    )
    disc.add_argument(
        "--rho-h", type=_rho, default=None, help="human discount rate: delta = exp(-rho * duration)"
    )
    p.add_argument(
        "--optimistic",
        action="store_true",
        help="robots help (max over robot actions) instead of min",
    )
    p.add_argument(
        "--workers",
        type=_nonneg_int,
        default=1,
        help="local worker processes per rank; 0 = this rank's share of the cores (default 1)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="storage type of values and policies",
    )
    p.add_argument(
        "--levels",
        choices=("auto", "step", "height"),
        default="auto",
        help="dependency levels: step count (auto when possible) or height",
    )
    p.add_argument(
        "--max-states",
        type=_positive_int,
        default=None,
        help="stop with an error beyond this many states",
    )
    p.add_argument(
        "--output", default=None, help="write the prior here (.npz), atomically, by rank 0"
    )
    p.add_argument(
        "--max-memory",
        type=_memory_size,
        default=None,
        metavar="SIZE",
        help="stop cleanly (exit 1) when a rank's memory would exceed SIZE (e.g. 8G, 500M); "
        "default: 90%% of the memory available at the start, shared by the ranks of a node",
    )
    p.add_argument(
        "--mpi-simulate-nodes",
        type=_nonneg_int,
        default=None,
        metavar="K",
        help="re-run as K MPI ranks on this machine (the real MPI path); "
        "default: $PARALLEL_CORE_SIMULATE_NODES, else 0",
    )
    p.add_argument("--list-worlds", action="store_true", help="list the built-in worlds and exit")
    add_quiet_flag(p)
    return p


class _PhaseProgress:
    """One progress bar per phase, opened when the phase reports first, closed at the next."""

    def __init__(self, quiet: bool, dag_total: int):
        if not quiet:  # import the bars (rich) here, not inside the timed DAG phase
            from parallel_core.progress import progress_bar  # noqa: F401
        self.quiet = quiet
        self.dag_total = dag_total
        self.stack = contextlib.ExitStack()
        self.phase = None
        self.bar = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.quiet:  # no bars at all (and no import of rich on every rank)
            return
        from parallel_core.progress import progress_bar

        if phase == "end":  # close the bar before the next phase starts its worker pool
            self.stack.close()
            self.phase = None
            return
        if phase != self.phase:
            self.stack.close()
            self.stack = contextlib.ExitStack()
            label = "DAG waves" if phase == "dag" else "Phase 1 levels"
            bar_total = self.dag_total if phase == "dag" else total
            self.bar = self.stack.enter_context(progress_bar(bar_total, label, quiet=self.quiet))
            self.phase, self.done = phase, 0
        step = done - self.done
        if step > 0:
            self.bar.advance(step)
            self.done = done

    def close(self) -> None:
        self.stack.close()


class _Failed(Exception):
    """A failure already decided on every rank: ``code`` 2 (usage) or 1 (runtime)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _output_problem(path: str) -> str | None:
    """Why ``--output path`` cannot be written (one line), or None when it can.

    Only a regular file is ever replaced (``--output /dev/null`` as root must not replace
    the device); the folder must be writable now, before the run, not after it.
    """
    import os
    import stat
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        return f"--output {path} is a directory; give a file name such as {target / 'prior.npz'}"
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return f"--output {path}: {exc.strerror}"
    if st is not None and not stat.S_ISREG(st.st_mode):
        return (
            f"--output {path} exists and is not a regular file (a device, pipe or socket); "
            "it is never replaced: give a file name"
        )
    if st is not None and not os.access(target, os.W_OK):
        return f"--output {path}: the existing file is not writable"
    parent = target.parent
    while not parent.exists() and parent != parent.parent:  # missing folders are created
        parent = parent.parent
    if not parent.is_dir():
        return f"--output {path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--output {path}: no permission to write in {parent}"
    return None


SMOKE_MAX_STEPS = 4  # PARALLEL_RL_SMOKE=1: every built-in world/map shrinks to <= a few thousand states


def main(argv: list[str] | None = None) -> int:
    """Run ``empo-prior`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from parallel_core.cli import run_cli

    return run_cli(
        "empo-prior", lambda: _main(argv), interrupted="interrupted; worker processes stopped"
    )


def _main(argv: list[str] | None) -> int:
    from parallel_core.cli import UsageError

    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)  # usage errors answer here, before numpy

    if args.list_worlds:
        from .worlds import list_worlds

        worlds = list_worlds()
        if not args.quiet:
            _print_world_table(worlds)
        from parallel_core.cli import emit_json

        emit_json(worlds)
        return 0

    from parallel_core.mpi import get_context, relaunch_simulated, simulate_nodes_from_env

    nodes = args.mpi_simulate_nodes
    if nodes is None:
        nodes = simulate_nodes_from_env()  # PARALLEL_CORE_SIMULATE_NODES=K, as documented
    code = relaunch_simulated(nodes, ["-m", "empo_distributed.cli", *args_list])
    if code is not None:
        return code
    ctx = get_context()
    with ctx.abort_on_error():
        try:
            return _run(args, ctx)
        except _Failed as exc:
            failure = exc
    if not ctx.is_root:
        return failure.code
    if failure.code == 2:
        raise UsageError(str(failure))
    from parallel_core.cli import CliError

    raise CliError(str(failure))


def _run(args, ctx) -> int:
    from parallel_core.cli import emit_json, smoke_mode

    from .memory import MemoryGuard, MemoryLimitError, default_limit, peak_rss
    from .solver import compute_human_policy_prior
    from .world_model import WorldError
    from .worlds import load_world

    t0 = time.perf_counter()
    max_steps = args.max_steps
    smoke = smoke_mode()
    try:
        world = load_world(args.world, max_steps, smoke_max_steps=SMOKE_MAX_STEPS if smoke else None)
    except WorldError as exc:
        raise _Failed(2, str(exc)) from None
    goals = _goal_generator(world)
    if goals is None:
        raise _Failed(
            2,
            f"world {args.world!r} has neither a goal_generator() method nor a "
            "possible_goal_generator attribute; the CLI needs one to enumerate goals",
        )
    # Check --output before the (possibly long) run; rank 0 decides for every rank.
    problem = _output_problem(args.output) if (args.output and ctx.is_root) else None
    problem = ctx.bcast(problem)
    if problem:
        raise _Failed(2, problem)
    workers = args.workers if args.workers > 0 else ctx.local_workers
    quiet = args.quiet or not ctx.is_root
    limit = args.max_memory if args.max_memory is not None else default_limit(ctx.local_size)
    guard = MemoryGuard(limit, ctx)
    progress = _PhaseProgress(quiet, (getattr(world, "max_steps", 0) or 0) + 1)
    humans = list(world.human_agent_indices)
    try:
        prior = compute_human_policy_prior(
            world,
            humans,
            goals,
            beta_h=args.beta_h,
            gamma_h=args.gamma_h,
            rho_h=args.rho_h,
            optimistic=args.optimistic,
            workers=workers,
            ctx=ctx,
            dtype=args.dtype,
            levels=args.levels,
            on_phase=progress,
            max_states=args.max_states,
            memory_guard=guard,
            release_dag=True,  # the transitions are not needed after Phase 1: less memory
            # nothing written: no policy row is kept or sent but the root's (the summary's)
            policy_on="root" if args.output else "none",
        )
    except MemoryLimitError as exc:
        progress.close()
        raise _Failed(1, str(exc)) from None
    except (WorldError, ValueError) as exc:
        progress.close()
        raise _Failed(2, str(exc)) from None
    except BaseException:  # Ctrl-C, a dying rank: finish the bar before the message
        progress.close()
        raise
    progress.close()

    t_write = 0.0
    if args.output and ctx.is_root:
        tw = time.perf_counter()
        spec = getattr(world, "spec", None)
        prior.meta.update(
            world=args.world,
            world_name=str(getattr(world, "name", None) or args.world),
            max_steps=_plain_int(getattr(world, "max_steps", None)),
            map=list(spec.rows) if hasattr(spec, "rows") else None,
            ranks=ctx.size,
            workers=workers,
            mode=_mode(ctx.size, workers),
        )
        try:
            prior.save(args.output)
        except OSError as exc:  # e.g. disk full, permissions changed during the run
            raise _Failed(1, f"cannot write --output {args.output}: {exc.strerror or exc}") from None
        t_write = time.perf_counter() - tw
    t = prior.timings
    cpu = {
        "dag": round(t["dag_cpu_s"], 4),
        "goals_levels": round(t["goals_levels_cpu_s"], 4),
        "phase1": round(t["phase1_cpu_s"], 4),
        "process": round(time.process_time(), 4),  # including start-up and imports
    }
    gathered = ctx.gather((peak_rss(), cpu, t["parts"]))
    if not ctx.is_root:
        return 0
    rss = [g[0] for g in gathered]
    summary = {
        "world": args.world,
        "smoke": smoke,
        "states": len(prior),
        "terminal_states": int(prior.terminal.sum()),
        "levels": prior.meta["levels"],
        "humans": prior.meta["human_agent_indices"],
        "goals": int(len(prior.goal_ids)),
        "joint_actions": prior.dag.num_joint_actions,
        "outcomes": prior.dag.num_outcomes,
        "ranks": ctx.size,
        "workers_per_rank": workers,
        "beta_h": prior.meta["beta_h"],
        "gamma_h": prior.meta["gamma_h"],
        "optimistic": args.optimistic,
        "dtype": args.dtype,
        "time_s": {
            "dag": round(t["dag_s"], 4),
            "goals_levels": round(t["goals_levels_s"], 4),
            "phase1": round(t["phase1_s"], 4),
            "exchange": round(t["exchange_s"], 4),
            "write": round(t_write, 4),
            "total": round(time.perf_counter() - t0, 4),
        },
        # CPU seconds of each rank's own process: how the work splits, even on a busy machine
        "cpu_s_per_rank": [g[1] for g in gathered],
        "parts_per_rank": [g[2] for g in gathered],  # wall / CPU seconds of the solve's parts
        "phase1_pool_batches": t["phase1_parallel_batches"],
        "peak_rss_mb_per_rank": [round(r / 2**20, 1) for r in rss],
        "peak_rss_bytes_per_state": round(max(rss) / max(1, len(prior)), 1),
        "root_marginal": _rounded(prior(prior.states[0], humans[0])),
        "output": args.output,
    }
    if not args.quiet:
        print(
            f"empo-prior: {summary['states']} states, {summary['levels']} levels, "
            f"DAG {t['dag_s']:.2f}s, Phase 1 {t['phase1_s']:.2f}s "
            f"(exchange {t['exchange_s']:.2f}s), {ctx.size} rank(s) x {workers} worker(s)"
            + (f" -> {args.output}" if args.output else ""),
            file=sys.stderr,
        )
    emit_json(summary)
    return 0


def _goal_generator(world):
    """The CLI's goals: ``world.goal_generator()`` (built-in) or EMPO's ``possible_goal_generator``."""
    if callable(getattr(world, "goal_generator", None)):
        return world.goal_generator()
    return getattr(world, "possible_goal_generator", None)


def _mode(ranks: int, workers: int) -> str:
    if ranks > 1:
        return f"mpi x{ranks}" + (f" + {workers} workers" if workers > 1 else "")
    return f"{workers} workers" if workers > 1 else "serial"


def _plain_int(value):
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _rounded(probs) -> list[float] | None:
    return None if probs is None else [round(float(x), 6) for x in probs]


def _print_world_table(worlds: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="built-in worlds")
    for col in ("name", "states", "size", "humans", "robots", "goals_per_human", "max_steps", "description"):
        table.add_column(col)
    for w in worlds:
        table.add_row(
            *(
                str(w[c])
                for c in (
                    "name",
                    "states",
                    "size",
                    "humans",
                    "robots",
                    "goals_per_human",
                    "max_steps",
                    "description",
                )
            )
        )
    Console(file=sys.stderr).print(table)


if __name__ == "__main__":
    sys.exit(main())
