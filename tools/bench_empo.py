#!/usr/bin/env python3
"""Benchmark empo-distributed: DAG + Phase 1 in serial, local-parallel and MPI modes, side by side.

    uv run python tools/bench_empo.py                                # ~1e3, ~1e4, ~1e5 states
    uv run python tools/bench_empo.py --sizes 1e3,1e4,1e5,1e6 --output bench.json
    uv run python tools/bench_empo.py --quick                        # smoke run
    uv run python tools/bench_empo.py --upstream ~/empo --upstream-python ~/empo/.venv/bin/python
    uv run python tools/bench_empo.py --phase1-pool --output pool.json  # pool thresholds

Modes: serial, 2 local workers, 2 MPI ranks, 4 MPI ranks on this machine (simulated
nodes). Each run is a fresh process (under ``mpirun -n R`` for MPI) with one BLAS thread
per process, so peak RSS is per rank and nothing is warm. Modes are interleaved
(serial, workers, 2 ranks, 4 ranks, serial, ...) for ``--repeats`` rounds and the
medians reported, so a busy machine slows every mode alike. At 1e6 a mode with more
ranks than cores is skipped (noted in the JSON and on stderr; ``--all-modes-at-1e6``
runs it). Runs solve as ``empo-prior`` does (``release_dag``). Writes JSON (states, DAG /
Phase 1 / exchange seconds, states/s, speedups, peak RSS per rank, bytes per state,
identical-output check, load average, each rank's CPU seconds in the solve and the busiest
rank's share of serial's: the split of the work, which a busy machine distorts less than
wall time; with local workers the whole process and its workers) and prints a table.
Each round also runs ``--ranks`` serial solves side by side (``--no-ceiling`` skips it):
how much slower they are than one alone is the machine's own ceiling for a ``--ranks``-way
speedup at that moment (shared caches, memory bandwidth, a noisy host), and the MPI
mode's speedup is reported against it too. The per-state speed of Phase 1 is also
compared with the one-state-at-a-time Python oracle of ``packages/empo-distributed/tests``.
``--upstream PATH``: the same small upstream MultiGrid world solved by upstream EMPO and
by this package in one process, timed side by side. ``--phase1-pool``: only the
measurements behind the local Phase 1 pool's thresholds (per-batch CPU of the serial
kernel vs a 2-worker pool, whole Phase 1 across world sizes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from parallel_core.cli import CliError

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "1e3": ("medium", None),
    "1e4": ("large", None),
    "1e5": ("huge", None),
    "1e6": ("giant", None),
}
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def child(world_name: str, steps: int | None, workers: int, policy_on: str = "root") -> None:
    """One measured run (maybe as one MPI rank); rank 0 prints a JSON line. ``policy_on``:
    "root" as `empo-prior --output` (policies gathered to rank 0), "none" as `empo-prior`
    without it (only the root state's policy kept)."""
    from empo_distributed import compute_human_policy_prior, load_world
    from empo_distributed.memory import peak_rss
    from parallel_core.mpi import get_context

    ctx = get_context()
    world = load_world(world_name, steps)
    t0 = time.perf_counter()
    prior = compute_human_policy_prior(
        world,
        world.human_agent_indices,
        world.goal_generator(),
        beta_h=10.0,
        gamma_h=0.9,
        workers=workers,
        ctx=ctx,
        release_dag=True,  # as empo-prior runs it
        policy_on=policy_on,
    )
    total = time.perf_counter() - t0
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    peak = peak_rss()  # VmHWM: ru_maxrss would include the launcher's size after exec
    rss = {
        "rank": ctx.rank,
        # CPU seconds (this rank + its local workers): parallel efficiency even on a busy machine
        "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        "peak_rss_mb": peak / 2**20,
        "peak_rss_bytes_per_state": peak / max(1, len(prior)),
        "largest_worker_rss_mb": kids.ru_maxrss / 1024,
        # CPU seconds of this rank's own process in the solve (no start-up, no imports)
        "dag_cpu_s": prior.timings["dag_cpu_s"],
        "phase1_cpu_s": prior.timings["phase1_cpu_s"],
        "solve_cpu_s": prior.timings["dag_cpu_s"]
        + prior.timings["goals_levels_cpu_s"]
        + prior.timings["phase1_cpu_s"],
    }
    per_rank = ctx.gather(rss)
    if ctx.is_root:
        policy = prior.policy if prior.policy is not None else prior.root_policy
        digest = hashlib.sha256(prior.values.tobytes() + policy.tobytes()).hexdigest()[:16]
        print("BENCH_RESULT", end=" ")
        t = prior.timings
        print(
            json.dumps(
                {
                    "states": len(prior),
                    "outcomes": prior.dag.num_outcomes,
                    "levels": prior.meta["levels"],
                    "dag_s": t["dag_s"],
                    "phase1_s": t["phase1_s"],
                    "exchange_s": t["exchange_s"],
                    "total_s": total,
                    "ranks": ctx.size,
                    "workers_per_rank": workers,
                    "per_rank": per_rank,
                    "digest": digest,
                }
            )
        )


def run_config(world: str, steps, ranks: int, workers: int, copies: int = 1, policy_on: str = "root") -> dict:
    """One measured run: ``ranks`` MPI ranks x ``workers`` local workers. ``copies > 1``:
    that many independent runs side by side instead (the machine's ceiling, see
    :func:`ceiling`); the slowest copy's result is returned."""
    cmd = [sys.executable, __file__, "--_child", world, str(steps or 0), str(workers), policy_on]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpirun"), "-n", str(ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PARALLEL_CORE_"))}
    env.update(THREAD_ENV)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(copies)
    ]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise CliError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.strip()[-1500:]}")
            line = next(x for x in stdout.splitlines() if x.startswith("BENCH_RESULT "))
            outs.append(json.loads(line.removeprefix("BENCH_RESULT ")))
    finally:  # a failed or timed-out copy leaves no other copy running
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = max(outs, key=lambda o: o["total_s"])
    out["process_wall_s"] = time.perf_counter() - t0
    return out


def ceiling(serial_total_s: list[float], side_by_side_total_s: list[float], copies: int) -> dict:
    """What any ``copies``-way parallel run can gain on this machine now.

    ``copies`` independent serial runs side by side do ``copies`` times the work; if the
    slowest takes T_c and one alone T_1, the machine delivers ``copies * T_1 / T_c`` times
    one run's throughput (``copies`` on free cores; less where the cores share caches,
    memory bandwidth or a physical core, or another job runs). A parallel mode's speedup
    over that ceiling is its own efficiency, which a busy or noisy host does not hide.
    """
    import statistics

    t1, tc = statistics.median(serial_total_s), statistics.median(side_by_side_total_s)
    return {"copies": copies, "side_by_side_total_s": tc, "speedup": copies * t1 / tc}


def reference_rate(world_name: str, steps, max_states: int) -> dict:
    """Phase 1 of the scalar oracle: seconds per state."""
    sys.path.insert(0, str(ROOT / "packages" / "empo-distributed" / "tests"))
    from empo_reference import reference_prior

    from empo_distributed import load_world

    world = load_world(world_name, steps)
    timings: dict = {}
    reference_prior(
        world,
        world.human_agent_indices,
        world.goal_generator(),
        beta=10.0,
        gamma=0.9,
        max_states=max_states,
        timings=timings,
    )
    return {
        "world": world_name,
        "states": timings["states"],
        "phase1_s": timings["phase1_s"],
        "s_per_state": timings["phase1_s"] / timings["states"],
    }


UPSTREAM_CHILD = r"""
import json, os, sys, time
up = sys.argv[1]
sys.path[:0] = [f"{up}/src", f"{up}/vendor/multigrid"]
import gymnasium
sys.modules.setdefault("gym", gymnasium)
from gym_multigrid.multigrid import MultiGridEnv
from empo.backward_induction import compute_human_policy_prior as upstream
from empo_distributed import compute_human_policy_prior as ours

def env():
    return MultiGridEnv(config_file=f"{up}/multigrid_worlds/trivial.yaml", max_steps=int(sys.argv[2]))

out = {}
for name in ("upstream", "empo_distributed", "upstream", "empo_distributed", "upstream", "empo_distributed"):
    e = env()
    t = time.perf_counter()
    if name == "upstream":
        upstream(e, e.human_agent_indices, e.possible_goal_generator, beta_h=10.0, gamma_h=0.9,
                 quiet=True, use_float16=False, use_attainment_cache=False, min_free_memory_fraction=0.0)
    else:
        p = ours(e, e.human_agent_indices, e.possible_goal_generator, beta_h=10.0, gamma_h=0.9)
        out["states"] = len(p)
    out.setdefault(name + "_s", []).append(time.perf_counter() - t)
print("BENCH_RESULT " + json.dumps(out))
"""


def upstream_side_by_side(path: str, python: str, steps: int) -> dict:
    """Upstream EMPO and empo-distributed on the same MultiGrid world (trivial.yaml)."""
    import statistics

    env = dict(os.environ, **THREAD_ENV)
    r = subprocess.run(
        [python, "-c", UPSTREAM_CHILD, path, str(steps)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines() or ["no output"]
        raise CliError(
            f"--upstream run failed with {python} (exit {r.returncode}): {lines[-1].strip()} "
            "(--upstream-python needs numpy, gymnasium, tqdm, scipy, cloudpickle, psutil, pyyaml, "
            "matplotlib and this package)"
        )
    line = next(x for x in r.stdout.splitlines() if x.startswith("BENCH_RESULT "))
    out = json.loads(line.removeprefix("BENCH_RESULT "))
    up, ours = statistics.median(out["upstream_s"]), statistics.median(out["empo_distributed_s"])
    return {
        "world": f"{path}/multigrid_worlds/trivial.yaml",
        "max_steps": steps,
        "states": out["states"],
        "upstream_s_median": up,
        "empo_distributed_s_median": ours,
        "speedup": up / ours,
        "runs": out,
    }


def _pool_timed_task(idx):
    """A Phase 1 pool task that also reports its own wall and CPU seconds."""
    from empo_distributed import phase1

    t, c = time.perf_counter(), time.process_time()
    phase1._KERNEL["k"].compute(idx)
    return time.perf_counter() - t, time.process_time() - c


def phase1_pool_sweep(
    world_name: str, sizes: list[int], repeats: int, whole_worlds: list[str], workers: int = 2
) -> dict:
    """How the local Phase 1 pool compares with the serial kernel (tunes ``_LocalRunner``).

    Per batch of n states of the world's biggest level: serial kernel CPU in this process,
    CPU per worker and dispatch overhead (pool wall - slowest task) in a pool of
    ``workers``. CPU, because on a shared Linux machine the processes of one session
    share one CPU allowance (autogroup) and workers cannot show a wall-time gain there.
    Then the whole Phase 1, serial vs the pool forced at every level, on worlds of
    increasing size (wall and CPU including the workers).
    """
    import statistics

    import numpy as np

    from empo_distributed import load_world, phase1
    from empo_distributed.dag import build_dag
    from empo_distributed.goals import enumerate_goals
    from empo_distributed.levels import dependency_levels
    from empo_distributed.solver import compute_achieved
    from parallel_core.mpi import LocalContext

    ctx = LocalContext()

    def setup(name):
        w = load_world(name, None)
        dag = build_dag(w, ctx=ctx)
        gs = enumerate_goals(w.goal_generator(), dag.states[0], w.human_agent_indices)
        return w, dag, gs, compute_achieved(dag, gs, ctx), dependency_levels(dag)

    def cpu():
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    params = phase1.Phase1Params.make(10.0, 0.9)
    w, dag, gs, ach, lv = setup(world_name)
    G, N, nA = sum(len(g) for g in gs), len(dag), dag.num_actions
    meta = phase1.KernelMeta(
        dag.num_agents, nA, tuple(g.human for g in gs), tuple(w.robot_agent_indices), ((0, G),), params
    )
    arrays = {**dag.kernel_arrays(), "achieved": ach, "V": np.zeros((N, G)), "P": np.zeros((N, G, nA))}
    big = max(lv[1:], key=len)
    big = big[~dag.terminal[big]]
    runner = phase1._LocalRunner(arrays, meta, workers, None, dag.states)
    t = time.perf_counter()
    runner._start_pool()
    start_s = time.perf_counter() - t
    rows: dict[int, list] = {}
    try:
        for _ in range(repeats):
            for n in sizes:
                idx = big[:n]
                c, t = time.process_time(), time.perf_counter()
                runner.kernel.compute(idx)
                serial = (time.process_time() - c, time.perf_counter() - t)
                chunks = np.array_split(idx, max(1, min(2 * workers, n // 16)))
                t = time.perf_counter()
                out = [f.result() for f in [runner.pool.submit(_pool_timed_task, x) for x in chunks]]
                wall = time.perf_counter() - t
                rows.setdefault(n, []).append(
                    (serial[0], serial[1], wall, sum(o[1] for o in out) / workers, wall - max(o[0] for o in out))
                )
    finally:
        runner.close()
    K = dag.num_joint_actions
    batches = {
        n: {
            "elements": n * K * G,
            "serial_cpu_ms": 1e3 * statistics.median(x[0] for x in v),
            "serial_wall_ms": 1e3 * statistics.median(x[1] for x in v),
            "pool_wall_ms": 1e3 * statistics.median(x[2] for x in v),
            "pool_cpu_per_worker_ms": 1e3 * statistics.median(x[3] for x in v),
            "dispatch_ms": 1e3 * min(x[4] for x in v),
        }
        for n, v in rows.items()
    }
    whole = {}
    for name in whole_worlds:
        w, dag, gs, ach, lv = setup(name)
        runs: dict[str, list] = {}
        saved = phase1._LocalRunner.MIN_PARALLEL_WORK, phase1._LocalRunner.POOL_START_BATCHES
        try:
            for _ in range(repeats):
                for mode in ("serial", "pool"):
                    phase1._LocalRunner.MIN_PARALLEL_WORK = 0 if mode == "pool" else saved[0]
                    phase1._LocalRunner.POOL_START_BATCHES = 0 if mode == "pool" else saved[1]
                    c, t = cpu(), time.perf_counter()
                    phase1.backward_induction(
                        dag, gs, params, lv, ach, robots=w.robot_agent_indices,
                        workers=workers if mode == "pool" else 1, ctx=ctx,
                    )
                    runs.setdefault(mode, []).append((time.perf_counter() - t, cpu() - c))
        finally:
            phase1._LocalRunner.MIN_PARALLEL_WORK, phase1._LocalRunner.POOL_START_BATCHES = saved
        whole[name] = {
            "states": len(dag),
            "elements": len(dag) * dag.num_joint_actions * sum(len(g) for g in gs),
            **{
                m: {
                    "wall_s": statistics.median(x[0] for x in v),
                    "cpu_s": statistics.median(x[1] for x in v),
                }
                for m, v in runs.items()
            },
        }
    return {
        "world": world_name,
        "workers": workers,
        "pool_start_s": start_s,
        "load_average_1min": os.getloadavg()[0],
        "batches": batches,
        "whole_phase1": whole,
        "thresholds": {
            "MIN_PARALLEL_WORK": phase1._LocalRunner.MIN_PARALLEL_WORK,
            "POOL_START_BATCHES": phase1._LocalRunner.POOL_START_BATCHES,
        },
    }


def main() -> int:
    from parallel_core.cli import run_cli

    return run_cli("bench_empo", _main)


def _main() -> int:
    import statistics

    from parallel_core.cli import ArgumentParser, UsageError, smoke_mode

    p = ArgumentParser(prog="bench_empo", description=__doc__)
    p.add_argument("--sizes", default="1e3,1e4,1e5", help="comma list of " + ",".join(SIZES))
    p.add_argument(
        "--workers", type=int, default=2, help="local workers in the local-parallel mode"
    )
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks in the MPI mode")
    p.add_argument("--simulated-ranks", type=int, default=4, help="ranks of the simulated-nodes mode (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument(
        "--all-modes-at-1e6",
        action="store_true",
        help="also run the simulated-nodes mode at 1e6 (skipped by default: more ranks than "
        "cores busy-wait for each other, minutes per run on a 2-core machine)",
    )
    p.add_argument(
        "--reference-sizes", default="1e3,1e4", help="sizes on which to time the scalar oracle"
    )
    p.add_argument("--output", default="bench_empo.json", help="JSON results (written atomically)")
    p.add_argument("--quick", action="store_true", help="smallest size, short horizons, one round")
    p.add_argument("--upstream", default=None, metavar="PATH", help="an upstream EMPO checkout")
    p.add_argument(
        "--upstream-python", default=sys.executable,
        help="python with upstream's dependencies and this package (default: this one)",
    )
    p.add_argument(
        "--phase1-pool",
        action="store_true",
        help="only measure the local Phase 1 pool against the serial kernel (batch sizes of "
        "the 1e6-state world, whole Phase 1 across sizes): the numbers behind its thresholds",
    )
    p.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="skip the machine's ceiling (each round: --ranks serial runs side by side; "
        "their slowdown bounds any --ranks-way speedup on this machine now)",
    )
    p.add_argument(
        "--policies",
        choices=("root", "none"),
        default="root",
        help="root (default): policies gathered to rank 0, as `empo-prior --output` runs; "
        "none: only the root state's policy kept, as `empo-prior` without --output runs",
    )
    p.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        world, steps, workers, policy_on = args._child
        child(world, int(steps) or None, int(workers), policy_on)
        return 0

    if smoke_mode():
        args.quick = True
    if args.phase1_pool:
        world = "medium" if args.quick else "giant"
        sizes = [64, 256] if args.quick else [1000, 4000, 16000, 60000]
        whole = ["medium"] if args.quick else ["medium", "large", "huge", "giant"]
        result = {"phase1_pool": phase1_pool_sweep(world, sizes, args.repeats, whole)}
        from parallel_core.io import atomic_write

        with atomic_write(args.output, "w") as fh:
            fh.write(json.dumps(result, indent=2))
        for n, b in result["phase1_pool"]["batches"].items():
            print(
                f"batch {n} states ({b['elements']:.1e} elements): serial CPU {b['serial_cpu_ms']:.1f} ms, "
                f"per worker {b['pool_cpu_per_worker_ms']:.1f} ms, dispatch {b['dispatch_ms']:.1f} ms",
                file=sys.stderr,
            )
        for name, r in result["phase1_pool"]["whole_phase1"].items():
            print(
                f"{name} ({r['states']} states): serial {r['serial']['wall_s']:.3f} s / CPU "
                f"{r['serial']['cpu_s']:.3f} s, pool {r['pool']['wall_s']:.3f} s / CPU {r['pool']['cpu_s']:.3f} s",
                file=sys.stderr,
            )
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    if args.quick:
        args.sizes, args.repeats, args.reference_sizes = "1e3", 1, ""
        args.simulated_ranks = min(args.simulated_ranks, 2)
    sizes = [x for x in args.sizes.split(",") if x]  # --sizes '': only --upstream / --phase1-pool
    unknown = [x for x in sizes if x not in SIZES]
    if unknown:
        raise UsageError(f"unknown size(s) {unknown}; choose from {','.join(SIZES)}")
    if args.repeats < 1 or args.workers < 1 or args.ranks < 1:
        raise UsageError("--repeats, --workers and --ranks must be >= 1")
    if args.upstream and not Path(args.upstream, "src", "empo").is_dir():
        raise UsageError(f"--upstream {args.upstream}: not an EMPO checkout (no src/empo)")
    modes = [
        ("serial", 1, 1),
        (f"local x{args.workers}", 1, args.workers),
        (f"mpi x{args.ranks}", args.ranks, 1),
    ]
    if args.simulated_ranks > 1 and args.simulated_ranks != args.ranks:
        modes.append((f"mpi x{args.simulated_ranks} (simulated nodes)", args.simulated_ranks, 1))
    results = {
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))},
        "params": {"beta_h": 10.0, "gamma_h": 0.9, "repeats": args.repeats, "policies": args.policies},
        "note": "wall times on a possibly shared machine; medians of interleaved rounds",
        "sizes": {},
    }
    for size in sizes:
        world, steps = SIZES[size]
        if args.quick:
            steps = 4
        size_modes, skipped = modes, {}
        if size == "1e6" and not args.all_modes_at_1e6:
            oversubscribed = [m for m in modes if m[1] > (os.cpu_count() or 1)]
            size_modes = [m for m in modes if m not in oversubscribed]
            skipped = {
                m[0]: f"skipped at 1e6: {m[1]} ranks on {os.cpu_count()} cores busy-wait for "
                "each other (--all-modes-at-1e6 runs it)"
                for m in oversubscribed
            }
            for note in skipped.values():
                print(f"bench_empo: {note}", file=sys.stderr, flush=True)
        rounds: dict[str, list] = {label: [] for label, _, _ in size_modes}
        side_by_side: list[float] = []
        load_before = os.getloadavg()[0]
        for rep in range(args.repeats):  # interleaved: every mode sees the same machine load
            for label, ranks, workers in size_modes:
                print(f"bench_empo: {size} {world} {label} round {rep + 1} ...", file=sys.stderr, flush=True)
                rounds[label].append(run_config(world, steps, ranks, workers, policy_on=args.policies))
            if args.ceiling:
                print(
                    f"bench_empo: {size} {world} {args.ranks} serial runs side by side round {rep + 1} ...",
                    file=sys.stderr, flush=True,
                )
                side_by_side.append(
                    run_config(world, steps, 1, 1, copies=args.ranks, policy_on=args.policies)["total_s"]
                )
        runs = {}
        for label, rs in rounds.items():
            r = dict(rs[0])
            for key in ("dag_s", "phase1_s", "exchange_s", "total_s", "process_wall_s"):
                r[key] = statistics.median(x[key] for x in rs)
                r[key + "_all"] = [x[key] for x in rs]
            # Each rank's solve CPU seconds (median over rounds): the split of the work,
            # which a busy machine does not distort as much as wall time.
            # (with local workers: the whole process and its workers, start-up included)
            cpu_key = "solve_cpu_s" if r["workers_per_rank"] <= 1 else "cpu_s"
            r["solve_cpu_s_per_rank"] = [
                statistics.median(x["per_rank"][k][cpu_key] for x in rs)
                for k in range(len(rs[0]["per_rank"]))
            ]
            r["peak_rss_mb_max_rank"] = max(x["peak_rss_mb"] for x in r["per_rank"])
            r["peak_rss_bytes_per_state"] = max(x["peak_rss_bytes_per_state"] for x in r["per_rank"])
            runs[label] = r
        base = runs["serial"]
        for r in runs.values():
            r["states_per_s_dag"] = r["states"] / r["dag_s"]
            r["states_per_s_phase1"] = r["states"] / r["phase1_s"]
            r["speedup_dag"] = base["dag_s"] / r["dag_s"]
            r["speedup_phase1"] = base["phase1_s"] / r["phase1_s"]
            r["speedup_total"] = base["total_s"] / r["total_s"]
            r["cpu_max_rank_vs_serial"] = (  # solve CPU of the busiest rank / serial's
                max(r["solve_cpu_s_per_rank"]) / base["solve_cpu_s_per_rank"][0]
                if r["workers_per_rank"] <= 1
                else None
            )
        entry = {
            "world": world,
            "max_steps": steps,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "runs": runs,
            "skipped_modes": skipped,
            "identical_outputs": len({x["digest"] for rs in rounds.values() for x in rs}) == 1,
        }
        if side_by_side:
            c = ceiling(base["total_s_all"], side_by_side, args.ranks)
            c["side_by_side_total_s_all"] = side_by_side
            mpi = runs.get(f"mpi x{args.ranks}")
            if mpi is not None:
                c["mpi_speedup_total"] = mpi["speedup_total"]
                c["mpi_share_of_ceiling"] = mpi["speedup_total"] / c["speedup"]
            entry["machine_ceiling"] = c
        if size in args.reference_sizes.split(","):
            print(f"bench_empo: {size} scalar reference ...", file=sys.stderr, flush=True)
            ref = reference_rate(world, steps, max_states=10**6)
            ref["phase1_speedup_per_state_vs_reference"] = ref["s_per_state"] / (
                base["phase1_s"] / base["states"]
            )
            entry["reference"] = ref
        results["sizes"][size] = entry
    if args.upstream:
        print("bench_empo: upstream EMPO side by side ...", file=sys.stderr, flush=True)
        results["upstream"] = upstream_side_by_side(args.upstream, args.upstream_python, 3 if args.quick else 4)

    from parallel_core.io import atomic_write

    with atomic_write(args.output, "w") as fh:  # a finished results file is never half-written
        fh.write(json.dumps(results, indent=2))
    _table(results)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    if not results["sizes"]:
        _upstream_line(results)
        return

    t = Table(title="empo-distributed benchmark (beta_h=10, gamma_h=0.9)")
    for c in (
        "size",
        "world",
        "states",
        "mode",
        "DAG s",
        "Phase1 s",
        "exch s",
        "states/s P1",
        "speedup DAG",
        "speedup P1",
        "CPU s/rank",
        "CPU vs serial",
        "peak RSS/rank MB",
        "B/state",
        "same",
        "P1 vs loop",
    ):
        t.add_column(c, justify="right")
    for size, e in results["sizes"].items():
        for label, r in e["runs"].items():
            ref = e.get("reference", {}).get("phase1_speedup_per_state_vs_reference")
            t.add_row(
                size,
                e["world"],
                str(r["states"]),
                label,
                f"{r['dag_s']:.2f}",
                f"{r['phase1_s']:.3f}",
                f"{r['exchange_s']:.3f}",
                f"{r['states_per_s_phase1']:.0f}",
                f"{r['speedup_dag']:.2f}",
                f"{r['speedup_phase1']:.2f}",
                "/".join(f"{c:.2f}" for c in r["solve_cpu_s_per_rank"])
                + (" (+workers)" if r["workers_per_rank"] > 1 else ""),
                f"{100 * r['cpu_max_rank_vs_serial']:.0f}%" if r["cpu_max_rank_vs_serial"] else "",
                f"{r['peak_rss_mb_max_rank']:.0f}",
                f"{r['peak_rss_bytes_per_state']:.0f}",
                "yes" if e["identical_outputs"] else "NO",
                f"{ref:.0f}x" if (ref and label == "serial") else "",
            )
    Console(width=200, stderr=True).print(t)
    for size, e in results["sizes"].items():
        c = e.get("machine_ceiling")
        if c:
            line = (
                f"{size}: {c['copies']} serial runs side by side take {c['side_by_side_total_s']:.2f} s "
                f"(one alone {e['runs']['serial']['total_s']:.2f} s): this machine's {c['copies']}-way "
                f"ceiling now is {c['speedup']:.2f}x"
            )
            if "mpi_speedup_total" in c:
                line += (
                    f"; mpi x{c['copies']} {c['mpi_speedup_total']:.2f}x total = "
                    f"{100 * c['mpi_share_of_ceiling']:.0f}% of it"
                )
            print(line, file=sys.stderr)
    _upstream_line(results)


def _upstream_line(results: dict) -> None:
    up = results.get("upstream")
    if up:
        print(
            f"upstream EMPO vs empo-distributed on {up['world']} (max_steps {up['max_steps']}, "
            f"{up['states']} states): {up['upstream_s_median']:.3f} s vs "
            f"{up['empo_distributed_s_median']:.3f} s ({up['speedup']:.1f}x)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
