"""Benchmark esper: does growth pay and does PPO learn it (``--learning``), and how fast
the vectorised env loop runs (env-epochs/s, always).

**Learning** (``--learning``): PPO is trained for ``--train-episodes`` on the default
task, then the fixed host, the heuristic and the trained PPO controller (greedy, no
updates) each run ``--eval-episodes`` held-out episodes (hosts from another root seed
that training never saw). JSON ``learning: {fixed_host, heuristic, ppo}`` with
``val_acc_mean``, ``val_acc_ci95``, ``added_params_mean``, ``return_mean``, plus the PPO
reward curve (mean return per training batch).

**Throughput**: env-epochs/s for 1, 2, 4 envs, heuristic and PPO controllers, modes
``serial`` (one env at a time), ``vectorised`` (n envs, one device group) and
``cpu-threads`` (n envs over min(n, cores) CPU groups), plus ``cuda:0`` AMP off/bf16/fp16
and all GPUs where CUDA is present. Every configuration runs ``--repeats`` times,
interleaved (r1: A B C, r2: A B C, ...), and the median is reported with the spread, so
a 2x is told from noise on a shared machine. Timings are the training loop only.

    uv run python tools/bench_esper.py --quick --output bench_esper.json
    uv run python tools/bench_esper.py --learning --quick --output bench_learning.json

``--quick`` keeps the learning part within ~25 min on 2 cores; ``PARALLEL_RL_SMOKE=1``
shrinks everything to seconds (for the documentation test).

**Upstream** (``--upstream PATH``): esper-lite's own loop beside ours. It cannot run
here: the checkout's dependencies (``datasets``, ``transformers``, ``duckdb``, ``mcp``, ...)
are not installed and it has no digits task, so the option checks the checkout without
importing it and fails with one line saying why (exit 2 when PATH is not a checkout,
else 1); docs/esper-multigpu.md, "Benchmark", has the details.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time

from parallel_core.cli import smoke_mode


def _cfg(mode: str, **over):
    from esper_multigpu.config import build_config

    base = dict(telemetry_dir=None, quiet=True, cpu_threads=1, tensorboard=False)
    base.update(over)
    return build_config(mode, {}, base)


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval of the mean."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan")
    return m, 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def evaluate(
    mode: str, devices, episodes: int, seed: int, max_epochs: int, agent_state=None, **over
) -> dict:
    """``episodes`` held-out episodes of one controller in one batch; no learning."""
    from esper_multigpu.train import run_training

    cfg = _cfg(mode, devices=devices, n_envs=episodes, episodes=episodes, seed=seed, max_epochs=max_epochs, **over)
    summary, _ = run_training(
        cfg, log=lambda s: None, agent_state=agent_state, learn=False, greedy=True
    )
    acc = [a for b in summary["batches"] for a in b["final_val_acc"]]
    params = [p for b in summary["batches"] for p in b["seed_params"]]
    rets = [r for b in summary["batches"] for r in b["returns"]]
    added = [a for b in summary["batches"] for a in b["added_acc"]]
    m, ci = _stats(acc)
    return {
        "episodes": len(acc),
        "val_acc_mean": m,
        "val_acc_ci95": ci,
        "added_params_mean": statistics.fmean(params),
        "return_mean": statistics.fmean(rets),
        "added_acc_mean": statistics.fmean(added),
        "val_acc": acc,
        "added_params": params,
    }


def learning(args, devices) -> dict:
    from esper_multigpu.train import run_training

    t0 = time.perf_counter()
    cfg = _cfg(
        "ppo",
        devices=devices,
        n_envs=args.n_envs_train,
        episodes=args.train_episodes,
        seed=args.seed,
        max_epochs=args.max_epochs,
        telemetry_dir=args.telemetry_dir,
        ppo={"lr": args.ppo_lr},
        reward={"rent": args.rent},
        max_seeds=args.max_seeds,
        blueprints=args.blueprints,
        quiet=False,
    )
    print(
        f"bench: training PPO for {args.train_episodes} episodes ({args.n_envs_train} envs on {devices})",
        file=sys.stderr,
    )
    summary, trainer = run_training(cfg, log=lambda s: print(s, file=sys.stderr) if s.startswith("batch") else None)
    train_s = time.perf_counter() - t0
    state = trainer.agent.state_dict()
    curve = [b["mean_return"] for b in summary["batches"]]
    held_out = args.seed + 10_000  # another root seed: hosts training never saw
    out = {}
    for name, mode in (("fixed_host", "fixed"), ("heuristic", "heuristic"), ("ppo", "ppo")):
        print(f"bench: held-out evaluation of {name} ({args.eval_episodes} episodes)", file=sys.stderr)
        out[name] = evaluate(
            mode, devices, args.eval_episodes, held_out, args.max_epochs,
            agent_state=state if mode == "ppo" else None, reward={"rent": args.rent},
            max_seeds=args.max_seeds if mode == "ppo" else None, blueprints=args.blueprints,
        )  # fmt: skip
    half = max(1, len(curve) // 2)
    return {
        **out,
        "ppo_reward_curve": curve,
        "ppo_train_val_acc_curve": [b["mean_final_val_acc"] for b in summary["batches"]],
        "ppo_curve_first_half_mean": statistics.fmean(curve[:half]),
        "ppo_curve_second_half_mean": statistics.fmean(curve[half:]) if curve[half:] else None,
        "train_episodes": args.train_episodes,
        "eval_episodes": args.eval_episodes,
        "eval_policy": "greedy",
        "max_epochs": args.max_epochs,
        "train_wall_s": train_s,
        "total_wall_s": time.perf_counter() - t0,
        "ppo_lr": args.ppo_lr,
        "rent": args.rent,
        "ppo_max_seeds": args.max_seeds,
        "blueprints": args.blueprints,
        "host_params": summary["host_params"],
        "devices": devices,
    }


#: what an esper-lite checkout must offer to run "the same task, host size and slots"
UPSTREAM_ENTRY = "src/esper/simic/training/vectorized.py"
UPSTREAM_TASKS = "src/esper/runtime/tasks.py"


def upstream_problem(path: str) -> str | None:
    """Why esper-lite at ``path`` cannot run the comparison here (None when it can).

    Checked without importing anything from the checkout: it must be an esper-lite
    source tree, every distribution its ``pyproject.toml`` depends on must be installed
    in this environment (the benchmark installs nothing), and it must have the task we
    compare on (the digits task; upstream ships CIFAR-10 and TinyStories tasks, both
    downloaded at first use, which a machine without network cannot do).
    """
    import importlib.metadata as md
    import re
    import tomllib
    from pathlib import Path

    root = Path(path).expanduser()
    if not (root / UPSTREAM_ENTRY).is_file():
        return f"{path} is not an esper-lite checkout (no {UPSTREAM_ENTRY})"
    try:
        deps = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        return f"cannot read the dependencies of {root / 'pyproject.toml'} ({type(exc).__name__})"
    missing = []
    for dep in deps:
        name = re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0]
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        return (
            f"esper-lite at {path} cannot run here: it needs {', '.join(missing)}, not installed "
            "in this environment (the benchmark installs nothing; see docs/esper-multigpu.md)"
        )
    if "digits" not in (root / UPSTREAM_TASKS).read_text(encoding="utf-8"):
        return (
            f"esper-lite at {path} has no digits task (its tasks are CIFAR-10 and TinyStories, "
            "downloaded at first use), so it cannot run the same task here"
        )
    return None


def throughput_configs(n_envs_list, cores, cuda_count):
    for controller in ("heuristic", "ppo"):
        for n in n_envs_list:
            yield controller, n, "serial", dict(devices=["cpu"], n_envs=1, episodes=n)
            if n > 1:
                yield controller, n, "vectorised", dict(devices=["cpu"], n_envs=n, episodes=n)
            groups = max(1, min(n, cores))
            if groups > 1:
                yield controller, n, "cpu-threads", dict(devices=["cpu"] * groups, n_envs=n, episodes=n)
            if cuda_count:
                for amp in ("off", "bf16", "fp16"):
                    yield controller, n, f"cuda:0 amp={amp}", dict(devices=["cuda:0"], n_envs=n, episodes=n, amp=amp)
                if cuda_count > 1:
                    devs = [f"cuda:{i}" for i in range(cuda_count)]
                    yield controller, n, f"cuda:0-{cuda_count - 1} amp=bf16", dict(devices=devs, n_envs=n, episodes=n, amp="bf16")


def run_throughput(controller: str, spec: dict, max_epochs: int, task: str) -> float:
    """env-epochs/s of the training loop (batches only: no imports, no data loading)."""
    from esper_multigpu.train import run_training

    cfg = _cfg(controller, task=task, max_epochs=max_epochs, seed=0, **spec)
    summary, _ = run_training(cfg, log=lambda s: None)
    loop = sum(
        len(b["episodes"]) * max_epochs / b["env_epochs_per_s"] for b in summary["batches"]
    )
    return spec["episodes"] * max_epochs / loop


def throughput(args, cores, cuda_count) -> list[dict]:
    configs = list(throughput_configs(args.n_envs, cores, cuda_count))
    samples: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for r in range(args.repeats):  # interleaved: every configuration once per round
        for i, (controller, _n, _mode, spec) in enumerate(configs):
            samples[i].append(run_throughput(controller, spec, args.throughput_epochs, args.task))
        print(f"bench: throughput round {r + 1}/{args.repeats} done", file=sys.stderr)
    rows = []
    for i, (controller, n, mode, spec) in enumerate(configs):
        s = samples[i]
        rows.append(
            {
                "controller": controller,
                "n_envs": n,
                "mode": mode,
                "devices": spec["devices"],
                "amp": spec.get("amp", "off"),
                "repeats": len(s),
                "env_epochs_per_s": statistics.median(s),
                "min": min(s),
                "max": max(s),
                "samples": s,
            }
        )
    for row in rows:
        serial = next(
            r for r in rows
            if r["controller"] == row["controller"] and r["n_envs"] == row["n_envs"] and r["mode"] == "serial"
        )  # fmt: skip
        row["speedup_vs_serial"] = row["env_epochs_per_s"] / serial["env_epochs_per_s"]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learning", action="store_true", help="also run the learning comparison (fixed host vs heuristic vs trained PPO)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput part")
    p.add_argument("--quick", action="store_true", help="smaller budgets (learning within ~25 min on 2 cores)")
    p.add_argument("--output", "--out", dest="output", default="bench_esper.json", help="JSON report (written atomically)")
    p.add_argument("--n-envs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, help="interleaved rounds per throughput configuration (default 5; quick 3)")
    p.add_argument("--task", default="digits")
    p.add_argument("--max-epochs", type=int, default=12, help="epochs per learning episode")
    p.add_argument("--train-episodes", type=int, help="PPO training episodes (default 96; quick 48)")
    p.add_argument("--eval-episodes", type=int, help="held-out episodes per controller (default 16; quick 8)")
    p.add_argument("--ppo-lr", type=float, default=3e-3)
    p.add_argument("--rent", type=float, default=0.005, help="reward rent per epoch on log(1 + seed/host params), all controllers")
    p.add_argument(
        "--blueprints", nargs="+", default=["attention", "depthwise", "conv_light", "conv_heavy"],
        help="blueprints every controller may germinate (default: the four with capacity; not noop, norm)",
    )  # fmt: skip
    p.add_argument("--max-seeds", type=int, default=1, help="PPO's growth budget: seeds in the model at once (the baselines run their defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--telemetry-dir", default=None, help="keep the PPO training telemetry here")
    p.add_argument(
        "--upstream", metavar="PATH",
        help="an esper-lite checkout to run beside ours (fails with the reason where it cannot run)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.upstream:
        from pathlib import Path

        if not (Path(args.upstream).expanduser() / UPSTREAM_ENTRY).is_file():
            p.error(f"--upstream: {args.upstream} is not an esper-lite checkout (no {UPSTREAM_ENTRY})")
        problem = upstream_problem(args.upstream) or (
            "esper-lite's dependencies are installed, but running its loop on our task is not wired up"
        )
        print(f"bench_esper.py: error: --upstream: {problem}", file=sys.stderr)
        return 1
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.train_episodes = args.train_episodes or (48 if args.quick else 96)
    args.eval_episodes = args.eval_episodes or (8 if args.quick else 16)
    args.throughput_epochs = 3 if args.quick else 6
    args.n_envs_train = 4
    if smoke_mode():
        args.n_envs, args.repeats, args.throughput_epochs = [2], 1, 2
        args.train_episodes, args.eval_episodes, args.max_epochs, args.n_envs_train = 2, 2, 3, 2

    import torch

    from parallel_core.budget import available_cores
    from parallel_core.devices import cuda_device_count
    from parallel_core.io import atomic_write

    torch.set_num_threads(1)
    cores, cuda_count = available_cores(), cuda_device_count()
    devices = ["cuda:0"] if cuda_count else ["cpu"] * max(1, min(2, cores))
    report = {
        "benchmark": "esper",
        "task": args.task,
        "cores": cores,
        "cuda_devices": cuda_count,
        "gpu": torch.cuda.get_device_name(0) if cuda_count else None,
        "torch": torch.__version__,
        "quick": args.quick,
        "smoke": smoke_mode(),
    }
    if args.learning:
        report["learning"] = learning(args, devices)
    if not args.no_throughput:
        report["throughput"] = {
            "max_epochs": args.throughput_epochs,
            "repeats": args.repeats,
            "statistic": "median of interleaved repeats",
            "results": throughput(args, cores, cuda_count),
        }
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with atomic_write(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, stderr=False)
    if "learning" in report:
        L = report["learning"]
        t = Table(title=f"esper learning: held-out {L['eval_episodes']} episodes, PPO trained {L['train_episodes']}")
        for col in ("controller", "val acc", "±95%", "added params", "return"):
            t.add_column(col, justify="right")
        for name in ("fixed_host", "heuristic", "ppo"):
            r = L[name]
            t.add_row(name, f"{r['val_acc_mean']:.4f}", f"{r['val_acc_ci95']:.4f}", f"{r['added_params_mean']:.0f}", f"{r['return_mean']:+.4f}")
        console.print(t)
        console.print("PPO reward curve (mean return per batch): " + " ".join(f"{x:+.3f}" for x in L["ppo_reward_curve"]))
    if "throughput" in report:
        t = Table(title=f"esper env-epochs/s ({args.task}, {args.throughput_epochs} epochs, median of {args.repeats}, {cores} cores)")
        for col in ("controller", "n_envs", "mode", "env-epochs/s", "min-max", "speedup"):
            t.add_column(col, justify="right")
        for r in report["throughput"]["results"]:
            t.add_row(r["controller"], str(r["n_envs"]), r["mode"], f"{r['env_epochs_per_s']:.2f}", f"{r['min']:.2f}-{r['max']:.2f}", f"{r['speedup_vs_serial']:.2f}x")
        console.print(t)
    print(f"bench: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
