"""``empo-prior``: compute the EMPO Phase 1 human policy prior of a world.

A thin shell: parse flags, load the world, call :func:`compute_human_policy_prior`,
write the prior (rank 0, atomically) and print a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
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


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (what is wrong, where to look), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``empo-prior`` argument parser (usage errors: one line, exit code 2)."""
    p = _Parser(
        prog="empo-prior",
        description="EMPO Phase 1: build the state DAG of a world and compute the goal-conditioned "
        "Boltzmann human policy prior by backward induction (serial, local processes, MPI).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "--mpi-simulate-nodes",
        type=_nonneg_int,
        default=0,
        metavar="K",
        help="re-run as K MPI ranks on this machine (the real MPI path)",
    )
    p.add_argument("--list-worlds", action="store_true", help="list the built-in worlds and exit")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars or summary line on stderr"
    )
    return p


class _PhaseProgress:
    """One progress bar per phase, opened when the phase reports first, closed at the next."""

    def __init__(self, quiet: bool, dag_total: int):
        self.quiet = quiet
        self.dag_total = dag_total
        self.stack = contextlib.ExitStack()
        self.phase = None
        self.bar = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
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


def _err(ctx, message: str) -> int:
    if ctx is None or ctx.is_root:
        print(f"empo-prior: error: {message}", file=sys.stderr)
    return 2


def _terminated(signum, frame) -> None:
    print("empo-prior: terminated", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def _output_problem(path: str) -> str | None:
    """Why ``--output path`` cannot be written (one line), or None when it looks writable."""
    import os
    from pathlib import Path

    target = Path(path)
    if target.is_dir():
        return f"--output {path} is a directory; give a file name such as {target / 'prior.npz'}"
    parent = target.parent
    while not parent.exists() and parent != parent.parent:  # missing folders are created
        parent = parent.parent
    if not parent.is_dir():
        return f"--output {path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--output {path}: no permission to write in {parent}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``empo-prior`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `empo-prior | head` ends quietly
    if argv is None:  # `kill`, a batch scheduler's time limit: unwind, so pools stop and the
        signal.signal(signal.SIGTERM, _terminated)  # shared-memory files in /dev/shm are removed

    from .worlds import list_worlds

    if args.list_worlds:
        worlds = list_worlds()
        if not args.quiet:
            _print_world_table(worlds)
        print(json.dumps(worlds, indent=2))
        return 0

    from parallel_core.mpi import get_context, relaunch_simulated

    code = relaunch_simulated(args.mpi_simulate_nodes, ["-m", "empo_distributed.cli", *args_list])
    if code is not None:
        return code
    ctx = get_context()
    try:
        with ctx.abort_on_error():
            return _run(args, ctx)
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; pools and shared files are closed
        print("empo-prior: interrupted; worker processes stopped", file=sys.stderr)
        return 130


def _run(args, ctx) -> int:
    from .solver import compute_human_policy_prior
    from .world_model import WorldError
    from .worlds import load_world

    t0 = time.perf_counter()
    try:
        world = load_world(args.world, args.max_steps)
    except WorldError as exc:
        return _err(ctx, str(exc))
    if not hasattr(world, "goal_generator"):
        return _err(
            ctx,
            f"world {args.world!r} has no goal_generator() method; the CLI needs one to enumerate goals",
        )
    # Check --output before the (possibly long) run; rank 0 decides for every rank.
    problem = _output_problem(args.output) if (args.output and ctx.is_root) else None
    problem = ctx.bcast(problem)
    if problem:
        return _err(ctx, problem)
    workers = args.workers if args.workers > 0 else ctx.local_workers
    quiet = args.quiet or not ctx.is_root
    progress = _PhaseProgress(quiet, (getattr(world, "max_steps", 0) or 0) + 1)
    try:
        prior = compute_human_policy_prior(
            world,
            world.human_agent_indices,
            world.goal_generator(),
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
        )
    except (WorldError, ValueError) as exc:
        progress.close()
        return _err(ctx, str(exc))
    except BaseException:  # Ctrl-C, a dying rank: finish the bar before the message
        progress.close()
        raise
    progress.close()

    t_write = 0.0
    if args.output and ctx.is_root:
        tw = time.perf_counter()
        prior.meta.update(
            world=args.world,
            world_name=getattr(world, "name", args.world),
            max_steps=getattr(world, "max_steps", None),
            map=list(world.spec.rows) if hasattr(world, "spec") else None,
            ranks=ctx.size,
            workers=workers,
        )
        try:
            prior.save(args.output)
        except OSError as exc:  # e.g. disk full, permissions changed during the run
            return _err(ctx, f"cannot write --output {args.output}: {exc.strerror or exc}")
        t_write = time.perf_counter() - tw
    if not ctx.is_root:
        return 0
    t = prior.timings
    summary = {
        "world": args.world,
        "states": len(prior),
        "terminal_states": int(prior.terminal.sum()),
        "levels": prior.meta["levels"],
        "humans": prior.meta["human_agent_indices"],
        "goals": int(len(prior.goal_ids)),
        "joint_actions": prior.dag.num_joint_actions,
        "outcomes": int(len(prior.dag.probs)),
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
        "root_marginal": _rounded(prior(prior.states[0], prior.human_agent_indices[0])),
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
    print(json.dumps(summary, indent=2))
    return 0


def _rounded(probs) -> list[float] | None:
    return None if probs is None else [round(float(x), 6) for x in probs]


def _print_world_table(worlds: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="built-in worlds")
    for col in ("name", "size", "humans", "robots", "goals_per_human", "max_steps", "description"):
        table.add_column(col)
    for w in worlds:
        table.add_row(
            *(
                str(w[c])
                for c in (
                    "name",
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
