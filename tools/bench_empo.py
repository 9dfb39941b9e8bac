#!/usr/bin/env python3
"""Benchmark empo-distributed: DAG + Phase 1 in serial, local-parallel and MPI modes, side by side.

    uv run python tools/bench_empo.py                       # ~1e3, ~1e4, ~1e5 states
    uv run python tools/bench_empo.py --sizes 1e3 --quick   # smoke run

Each configuration runs in a fresh process (under ``mpirun -n R`` for MPI), with one
BLAS thread per process, so peak RSS is per rank and nothing is warm. Writes JSON
(states, wall time per phase, states/s, peak RSS per rank, speedups, identical-output
check) and prints a table. The per-state speed of Phase 1 is also compared with the
one-state-at-a-time Python oracle kept in ``packages/empo-distributed/tests``.
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

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"1e3": ("medium", None), "1e4": ("large", None), "1e5": ("huge", None)}
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def child(world_name: str, steps: int | None, workers: int) -> None:
    """One measured run (maybe as one MPI rank); rank 0 prints a JSON line."""
    from empo_distributed import compute_human_policy_prior, load_world
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
    )
    total = time.perf_counter() - t0
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    rss = {
        "rank": ctx.rank,
        # CPU seconds (this rank + its local workers): parallel efficiency even on a busy machine
        "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    per_rank = ctx.gather(rss)
    if ctx.is_root:
        digest = hashlib.sha256(prior.values.tobytes() + prior.policy.tobytes()).hexdigest()[:16]
        t = prior.timings
        print(
            json.dumps(
                {
                    "states": len(prior),
                    "outcomes": int(len(prior.dag.probs)),
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


def run_config(world: str, steps, ranks: int, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--_child", world, str(steps or 0), str(workers)]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpirun"), "-n", str(ranks), *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PARALLEL_CORE_"))}
    env.update(THREAD_ENV)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(
            f"bench_empo: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}"
        )
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


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


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="1e3,1e4,1e5", help="comma list of " + ",".join(SIZES))
    p.add_argument(
        "--workers", type=int, default=2, help="local workers in the local-parallel mode"
    )
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks in the MPI mode")
    p.add_argument(
        "--reference-sizes", default="1e3,1e4", help="sizes on which to time the scalar oracle"
    )
    p.add_argument("--output", default="bench_empo.json")
    p.add_argument("--quick", action="store_true", help="smaller horizons (smoke test)")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        world, steps, workers = args._child
        child(world, int(steps) or None, int(workers))
        return 0

    unknown = [x for x in args.sizes.split(",") if x not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {unknown}; choose from {','.join(SIZES)}")
    modes = [
        ("serial", 1, 1),
        (f"local x{args.workers}", 1, args.workers),
        (f"mpi x{args.ranks}", args.ranks, 1),
    ]
    results = {
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))},
        "params": {"beta_h": 10.0, "gamma_h": 0.9},
        "sizes": {},
    }
    for size in args.sizes.split(","):
        world, steps = SIZES[size]
        if args.quick:
            steps = 4
        runs = {}
        for label, ranks, workers in modes:
            print(f"bench_empo: {size} {world} {label} ...", file=sys.stderr, flush=True)
            runs[label] = run_config(world, steps, ranks, workers)
        base = runs["serial"]
        for r in runs.values():
            r["states_per_s_dag"] = r["states"] / r["dag_s"]
            r["states_per_s_phase1"] = r["states"] / r["phase1_s"]
            r["speedup_dag"] = base["dag_s"] / r["dag_s"]
            r["speedup_phase1"] = base["phase1_s"] / r["phase1_s"]
            r["speedup_total"] = base["total_s"] / r["total_s"]
        entry = {
            "world": world,
            "max_steps": steps,
            "runs": runs,
            "identical_outputs": len({r["digest"] for r in runs.values()}) == 1,
        }
        if size in args.reference_sizes.split(","):
            print(f"bench_empo: {size} scalar reference ...", file=sys.stderr, flush=True)
            ref = reference_rate(world, steps, max_states=10**6)
            ref["phase1_speedup_per_state_vs_reference"] = ref["s_per_state"] / (
                base["phase1_s"] / base["states"]
            )
            entry["reference"] = ref
        results["sizes"][size] = entry

    from parallel_core.io import atomic_write

    with atomic_write(args.output, "w") as fh:  # a finished results file is never half-written
        fh.write(json.dumps(results, indent=2))
    _table(results)
    print(f"wrote {args.output}")
    return 0


def _table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

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
        "peak RSS/rank MB",
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
                f"{max(x['peak_rss_mb'] for x in r['per_rank']):.0f}",
                "yes" if e["identical_outputs"] else "NO",
                f"{ref:.0f}x" if (ref and label == "serial") else "",
            )
    Console(width=200).print(t)


if __name__ == "__main__":
    sys.exit(main())
