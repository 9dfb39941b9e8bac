#!/usr/bin/env python
"""Benchmark agent-async-train's execution layers side by side on the same seed and budget.

Modes (each in a fresh subprocess, one after another, one torch thread per thread):

  sequential              the plain loop: per-agent acting, per-agent training inline
  parallel_actions        one batched forward for all agents' actions
  parallel_training       all agents' updates in one batched pass (inline)
  async                   background learner thread, per-agent acting
  async_parallel_actions  background learner + batched acting
  all                     background learner + batched acting + batched training

Every mode does the same number of environment steps and the same number of updates per
agent (same replay ratio). Writes JSON (wall time, env steps/s, updates/s, final greedy
score, time split, peak memory, speedup vs sequential) and prints a table.

  uv run python tools/bench_async_train.py --epochs 10 --out bench_async_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MODES = {
    "sequential": {},
    "parallel_actions": {"parallel_actions": True},
    "parallel_training": {"parallel_training": True},
    "async": {"async_learning": True},
    "async_parallel_actions": {"async_learning": True, "parallel_actions": True},
    "all": {"async_learning": True, "parallel_actions": True, "parallel_training": True},
}


def child(mode: str, args: argparse.Namespace) -> dict:
    """Run one mode in this process and return its measurements."""
    import torch

    from agent_async_train.config import Config, parse_override, set_key, validate
    from agent_async_train.loop import Experiment

    torch.set_num_threads(1)
    cfg = Config()
    cfg.game.agents = args.agents
    cfg.run.seed = args.seed
    cfg.run.tensorboard = False
    cfg.parallel.replay_ratio = args.replay_ratio
    cfg.parallel.train_interval = args.train_interval
    for item in args.overrides:
        set_key(cfg, *parse_override(item))
    for key, value in MODES[mode].items():
        setattr(cfg.parallel, key, value)
    validate(cfg)
    ex = Experiment(cfg)
    ex.start()
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        ex.run_epoch()
    ex.close()  # includes the learner draining its last due rounds
    wall = time.perf_counter() - t0
    h = ex.history
    ev = ex.evaluate(args.eval_episodes)
    n = ex.game.num_agents
    return {
        "mode": mode,
        "flags": MODES[mode],
        "wall_s": wall,
        "env_steps": ex.env_steps,
        "updates_per_agent": ex.rounds,
        "env_steps_per_s": ex.env_steps / wall,
        "updates_per_s": ex.rounds * n / wall,
        "final_greedy_score": ev["greedy_score"],
        "random_score": ev["random_score"],
        "policy_lag_mean": sum(r["policy_lag_mean"] for r in h) / len(h),
        "time_split_s": {
            "env": sum(r["time_env_s"] for r in h),
            "inference": sum(r["time_inference_s"] for r in h),
            "buffer_write": sum(r["time_buffer_s"] for r in h),
            "training": sum(r["time_training_s"] for r in h),
            "learner_wait": sum(r["time_learner_wait_s"] for r in h),
            "lock_wait": sum(r["time_lock_wait_s"] for r in h),
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: uv run python tools/bench_async_train.py --epochs 10 --modes sequential all",
    )
    p.add_argument(
        "--epochs", type=int, default=10, help="epochs of 10 episodes x 50 turns (default 10)"
    )
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--replay-ratio", type=float, default=0.25, help="updates per agent per env step"
    )
    p.add_argument("--train-interval", type=int, default=4)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1, help="runs per mode; the fastest is reported")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--out", default="bench_async_train.json")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides like dqn.batch_size=128")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    from agent_async_train.config import Config, ConfigError, parse_override, set_key, validate

    try:  # reject a bad override here, in one line, instead of a traceback from every child
        cfg = Config()
        for item in args.overrides:
            set_key(cfg, *parse_override(item))
        validate(cfg)
    except ConfigError as err:
        print(f"bench_async_train: error: {err}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    from parallel_core.io import atomic_write
    from parallel_core.progress import progress_bar

    passthrough = [
        "--epochs",
        str(args.epochs),
        "--agents",
        str(args.agents),
        "--seed",
        str(args.seed),
        "--replay-ratio",
        str(args.replay_ratio),
        "--train-interval",
        str(args.train_interval),
        "--eval-episodes",
        str(args.eval_episodes),
        *args.overrides,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    results = {}
    with progress_bar(len(args.modes) * args.repeats, "benchmark", quiet=args.quiet) as bar:
        for _ in range(args.repeats):
            for mode in args.modes:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", mode, *passthrough],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if proc.returncode != 0:
                    print(f"bench_async_train: mode {mode} failed:\n{proc.stderr}", file=sys.stderr)
                    return 1
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                if mode not in results or res["wall_s"] < results[mode]["wall_s"]:
                    results[mode] = res
                bar.advance(1)
    base = results.get("sequential")
    for res in results.values():
        res["speedup_env_steps_vs_sequential"] = (
            res["env_steps_per_s"] / base["env_steps_per_s"] if base else None
        )
    report = {
        "benchmark": "agent-async-train execution layers",
        "machine": {
            "cores": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
        },
        "settings": {
            k: getattr(args, k)
            for k in (
                "epochs",
                "agents",
                "seed",
                "replay_ratio",
                "train_interval",
                "eval_episodes",
                "repeats",
                "overrides",
            )
        },
        "results": list(results.values()),
    }
    with atomic_write(args.out, "w") as f:
        json.dump(report, f, indent=2)
    table = Table(
        title=f"agent-async-train: {args.agents} agents, replay ratio {args.replay_ratio}, {args.epochs} epochs"
    )
    for col in (
        "mode",
        "wall s",
        "env steps/s",
        "updates/s",
        "speedup",
        "greedy",
        "env s",
        "infer s",
        "train s",
        "wait s",
        "lock s",
        "RSS MiB",
    ):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for r in results.values():
        t = r["time_split_s"]
        table.add_row(
            r["mode"],
            f"{r['wall_s']:.2f}",
            f"{r['env_steps_per_s']:.0f}",
            f"{r['updates_per_s']:.0f}",
            f"{r['speedup_env_steps_vs_sequential']:.2f}x" if base else "-",
            f"{r['final_greedy_score']:.2f}",
            f"{t['env']:.2f}",
            f"{t['inference']:.2f}",
            f"{t['training']:.2f}",
            f"{t['learner_wait']:.2f}",
            f"{t['lock_wait']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
        )
    Console(file=sys.stderr if args.quiet else sys.stdout, width=160).print(table)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
