#!/usr/bin/env python
"""Benchmark agent-async-train's execution layers side by side on the same budget.

GemGrid (``--game gemgrid``, default) modes:

  sequential        the plain loop: per-agent acting, per-agent training inline
  batched_acting    one batched forward for all agents' actions
  batched_training  all agents' updates in one batched pass (inline)
  async             the learner beside collection, nothing else
  all               learner + batched acting + batched training

sorrel games (``--game sorrel:treasurehunt``) modes:

  upstream          sorrel's own ``Environment.run_experiment`` (no logging, no animation)
  sequential        our loop with every layer off (sorrel's loop, step for step)
  parallel_collection  ``parallel.env_workers=N`` worker processes play episodes
  all               parallel collection + the learner training beside it (``--async-learning``)

  (batched acting / batched training do not apply to sorrel: its agents observe one after
  another within a turn; they are listed under ``not_applicable``.)

Each mode runs in a fresh subprocess at one torch/BLAS thread per process; modes are
interleaved (repeat 1: every mode, repeat 2: every mode, ...), the order rotated by one
mode per repeat (so no mode always runs first, or always right after ``all``), and repeat r
uses seed ``--seed + r``, so the reported medians cover several seeds, for speed and for the
final greedy score. Writes JSON (``modes``: mode, env_steps_per_s, speedup_vs_sequential, wall
time, final score, peak RSS) and prints a table.

With ``PARALLEL_RL_SMOKE=1`` (CI) the budget is the ``--quick`` one, smaller still, and every
mode runs in this process (one torch import instead of one per mode): a check that the
benchmark runs, not a measurement.

Learning, not only speed: ``--seeds 0 1 2 ...`` runs every mode once per listed seed (instead
of ``--repeats``). Random play is played once per seed (it depends only on the seed) and the
comparison is paired by seed: ``learning.paired`` holds the reference's gain over random
play (``upstream`` for sorrel games if it ran, else ``sequential``) and, for every other
mode, ``mode - reference`` seed by seed with its mean, standard deviation and 95%
t-interval. A mode is at least as good (``non_inferior``) when the reference beats random
play (CI above 0) and the CI's lower bound of ``mode - reference`` lies above ``-margin``,
``margin = --margin`` (default 0.25) x the reference's mean gain over random play: it keeps
at least three quarters of what the reference learnt, at 95% confidence. For sorrel games
``--eval-last K --eval-every M`` scores a run by the mean greedy score at its last K
evaluation points, M episodes apart (one policy's score jumps by several points between
checkpoints late in training; the mean is steadier); evaluating inside sorrel's own
``run_experiment`` is not possible, so use ``sequential`` there (the same steps, tested).

  uv run python tools/bench_async_train.py --quick
  uv run python tools/bench_async_train.py --game sorrel:treasurehunt --repeats 3 --output th.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEMGRID_MODES = {
    "sequential": {},
    "batched_acting": {"parallel_actions": True},
    "batched_training": {"parallel_training": True},
    "async": {"async_learning": True},
    "all": {"async_learning": True, "parallel_actions": True, "parallel_training": True},
}
SORREL_MODES = ["upstream", "sequential", "parallel_collection", "all"]
SORREL_NOT_APPLICABLE = {
    "batched_acting": "sorrel's agents observe and act one after another within a turn",
    "batched_training": "sorrel's models sample minibatches from the global numpy RNG",
    "async": "the learner runs beside collection workers; see `all`",
}


def _smoke() -> bool:
    return os.environ.get("PARALLEL_RL_SMOKE", "") not in ("", "0")


# -- children (one mode, one process) ----------------------------------------------------------
def _children_cpu() -> float:
    """User + system CPU seconds of this process's joined child processes."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_bound_speedup(runs: dict[str, list[dict]], cores: int) -> dict[str, float]:
    """Per mode: the speedup over ``sequential`` that the measured CPU seconds allow on
    ``cores`` idle cores, ``cpu(sequential) / max(busiest process, total / cores)``.

    Read from CPU times, not wall times, so it holds on a loaded machine too; the wall-clock
    speedup on an idle machine reaches it only if no process ever waits for another.
    """
    def need(r: dict) -> tuple[float, float]:
        procs = [r.get("collector_cpu_s", 0.0), *r.get("learner_cpu_s", [])]
        total = r.get("collector_cpu_s", 0.0) + r.get("children_cpu_s", 0.0)
        return total, max(max(procs), total / cores)

    if "sequential" not in runs or "collector_cpu_s" not in runs["sequential"][0]:
        return {}
    base = statistics.median(need(r)[0] for r in runs["sequential"])
    return {m: base / statistics.median(need(r)[1] for r in rs) for m, rs in runs.items()}


# t quantiles t(0.975, df) for df = 1..30 (two-sided 95%); above 30 the value for 30 (conservative)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def paired_difference(base: list[float], other: list[float]) -> dict:
    """``other - base`` seed by seed: mean, standard deviation and a 95% t-interval of the mean."""
    d = [y - x for x, y in zip(base, other, strict=True)]
    n = len(d)
    mean = statistics.fmean(d)
    if n < 2:
        return {"n": n, "per_seed": d, "mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(d)
    half = _T975[min(n - 1, len(_T975)) - 1] * std / n**0.5
    return {"n": n, "per_seed": d, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def learning_verdict(scores: dict[str, list[float]], random: list[float], reference: str,
                     margin_fraction: float) -> dict:
    """Paired by seed: does ``reference`` learn (its score above random play, CI above 0), and is
    every other mode non-inferior to it (CI lower bound of mode - reference above -margin, the
    margin being ``margin_fraction`` of the reference's mean gain over random play)?"""
    out: dict = {"reference": reference, "margin_fraction": margin_fraction}
    learns = paired_difference(random, scores[reference])
    out["reference_minus_random"] = learns
    out["reference_beats_random"] = bool(learns["ci95"] and learns["ci95"][0] > 0)
    margin = margin_fraction * learns["mean"] if out["reference_beats_random"] else None
    out["margin"] = margin
    out["vs_reference"] = {}
    for mode, s in scores.items():
        if mode == reference:
            continue
        diff = paired_difference(scores[reference], s)
        if diff["ci95"] is None or margin is None:
            verdict = None  # one seed, or nothing learnt to compare against
        else:
            verdict = diff["ci95"][0] > -margin
        out["vs_reference"][mode] = {**diff, "minus_random": paired_difference(random, s),
                                     "non_inferior": verdict}
    return out


def child_gemgrid(mode: str, args) -> dict:
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
    for key, value in GEMGRID_MODES[mode].items():
        setattr(cfg.parallel, key, value)
    validate(cfg)
    ex = Experiment(cfg)
    ex.start()
    learner = ex.learner
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        ex.run_epoch()
    ex.close()  # includes the learner draining its last due rounds
    wall = time.perf_counter() - t0
    collector_cpu = time.process_time() - c0
    learner_cpu = list(getattr(learner, "cpu_times", []))  # learner processes (none: inline)
    ev = ex.evaluate(args.eval_episodes, random_baseline=not args.no_random)
    return {
        "env_steps": ex.env_steps,
        "updates_per_agent": ex.rounds,
        "wall_s": wall,
        "env_steps_per_s": ex.env_steps / wall,
        "collector_cpu_s": collector_cpu,
        "learner_cpu_s": learner_cpu,
        "children_cpu_s": _children_cpu(),  # the learner processes, joined by close()
        "cpu_utilisation": (collector_cpu + sum(learner_cpu)) / wall,
        "learner_wait_s": ex.timers.learner_wait,
        "time_training_inline_s": ex.timers.training,
        "final_score": ev["greedy_score"],
        "random_score": ev.get("random_score"),
        "reward_name": ex.game.reward_name,
    }


def eval_plan(episodes: int, last: int, every: int) -> list[tuple[int, bool]]:
    """(episodes in this epoch, evaluate after it?) so that the last ``last`` greedy evaluations
    fall every ``every`` episodes, the final one after the last episode (made by the caller).

    One policy's greedy score on fixed episodes jumps by several points from one checkpoint
    to the next late in training; the mean over the last few checkpoints is the steadier score.
    """
    first = episodes - (last - 1) * every
    return [(first, last > 1)] + [(every, k < last - 2) for k in range(last - 1)]


def child_sorrel(mode: str, args) -> dict:
    import torch

    from agent_async_train.config import Config, parse_override, set_key, validate
    from agent_async_train.sorrel_run import SorrelExperiment

    torch.set_num_threads(1)
    cfg = Config()
    cfg.game.name = args.game
    cfg.run.seed = args.seed
    cfg.run.tensorboard = False
    cfg.run.episodes_per_epoch = args.episodes
    for item in args.overrides:
        set_key(cfg, *parse_override(item))
    if mode in ("parallel_collection", "all"):
        cfg.parallel.env_workers = args.env_workers
    if mode == "all":
        cfg.parallel.async_learning = True
    validate(cfg)
    ex = SorrelExperiment(cfg)
    ex.start()  # workers start (and build their environments) before the clock
    tmp = tempfile.TemporaryDirectory()  # run_experiment's output_dir (it writes nothing here)
    t0, c0 = time.perf_counter(), time.process_time()
    k0 = _children_cpu()
    points: list[float] = []  # greedy scores at the evaluation points before the last
    if mode == "upstream":
        ex.env.config.experiment.epochs = args.episodes - 1  # run_experiment runs epochs + 1
        ex.env.run_experiment(animate=False, logging=False, output_dir=Path(tmp.name))
        wall = time.perf_counter() - t0
        collector_cpu = time.process_time() - c0
        ex.episodes = args.episodes
        ex.env_steps = args.episodes * ex.max_turns * ex.num_agents
    else:
        wall = collector_cpu = 0.0
        for count, evaluate in eval_plan(args.episodes, args.eval_last, args.eval_every):
            cfg.run.episodes_per_epoch = count
            t0, c0 = time.perf_counter(), time.process_time()
            ex.run_epoch()
            wall += time.perf_counter() - t0
            collector_cpu += time.process_time() - c0
            if evaluate:  # outside the clock; on a copy, the training RNG streams untouched
                points.append(ex.evaluate(args.eval_episodes, random_baseline=False)["greedy_score"])
    ex.close()  # joins the collection workers: their CPU time is in RUSAGE_CHILDREN now
    tmp.cleanup()
    workers_cpu = _children_cpu() - k0
    ev = ex.evaluate(args.eval_episodes, random_baseline=not args.no_random)
    points.append(ev["greedy_score"])
    return {
        "env_steps": ex.env_steps,
        "updates_per_agent": ex.episodes,
        "wall_s": wall,
        "env_steps_per_s": ex.env_steps / wall,
        "collector_cpu_s": collector_cpu,
        "children_cpu_s": workers_cpu,  # the workers' whole lives, start-up included
        "cpu_utilisation": (collector_cpu + workers_cpu) / wall,
        "final_score": statistics.fmean(points),  # mean over the last --eval-last points
        "eval_points": points,
        "random_score": ev.get("random_score"),
        "reward_name": ex.reward_name,
    }


# -- parent -------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: uv run python tools/bench_async_train.py --quick --output bench.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--game", default="gemgrid", help="gemgrid (default) or sorrel:treasurehunt")
    p.add_argument("--quick", action="store_true", help="a small budget, one repeat: seconds")
    p.add_argument("--epochs", type=int, default=10, help="GemGrid: epochs of 10 episodes x 50 turns")
    p.add_argument("--episodes", type=int, default=40, help="sorrel: episodes per mode (default 40)")
    p.add_argument("--env-workers", type=int, default=2, help="sorrel: collection processes")
    p.add_argument("--agents", type=int, default=4, help="GemGrid agents")
    p.add_argument("--seed", type=int, default=0, help="repeat r uses seed + r")
    p.add_argument("--seeds", type=int, nargs="+", help="run every mode once per seed (replaces --repeats)")
    p.add_argument("--replay-ratio", type=float, default=0.25, help="GemGrid updates per agent per step")
    p.add_argument("--train-interval", type=int, default=4)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats per mode (medians)")
    p.add_argument("--modes", nargs="+", help="a subset of the game's modes")
    p.add_argument("--output", "--out", dest="output", default="bench_async_train.json")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--eval-last", type=int, default=1,
                   help="sorrel: score = mean greedy score at the last K evaluation points (default 1)")
    p.add_argument("--eval-every", type=int, default=25, help="sorrel: episodes between those points")
    p.add_argument("--margin", type=float, default=0.25,
                   help="--seeds: non-inferiority margin as a fraction of the reference's gain over random play")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--no-random", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides like dqn.batch_size=128")
    args = p.parse_args(argv)
    if args.seeds:
        args.repeats = len(args.seeds)
    if args.quick or _smoke():
        args.epochs, args.episodes = 1, min(args.episodes, 4)
        args.repeats = 1
        args.seeds = args.seeds[:1] if args.seeds else None
        args.eval_episodes = 2
        args.eval_last = 1
        if not args.game.startswith("sorrel:"):  # one epoch (500 steps) must include training
            args.overrides = ["dqn.learning_starts=100", *args.overrides]
            if _smoke():  # CI: 200 steps, 45 rounds (modes run in one process, see main)
                args.overrides = ["run.episodes_per_epoch=4", "dqn.learning_starts=20", *args.overrides]
        else:
            args.overrides = [
                "game.options={world: {height: 9, width: 9}, experiment: {max_turns: 20}}",
                *args.overrides,
            ]
    return args


def _fail(message: str) -> int:
    print(f"bench_async_train: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    sorrel = args.game.startswith("sorrel:")
    if args.child:
        fn = child_sorrel if sorrel else child_gemgrid
        print(json.dumps(fn(args.child, args)))
        return 0
    from agent_async_train.config import Config, ConfigError, parse_override, set_key, validate
    from agent_async_train.errors import GameError
    from agent_async_train.games import check_game_name

    all_modes = SORREL_MODES if sorrel else list(GEMGRID_MODES)
    modes = args.modes or all_modes
    bad = [m for m in modes if m not in all_modes]
    if bad:
        return _fail(f"unknown mode {bad[0]!r} for {args.game}; choose from {', '.join(all_modes)}")
    if min(args.epochs, args.episodes, args.repeats, args.eval_episodes, args.env_workers) < 1:
        return _fail("--epochs, --episodes, --repeats, --eval-episodes and --env-workers must be >= 1")
    if args.eval_last < 1 or args.eval_every < 1:
        return _fail("--eval-last and --eval-every must be >= 1")
    if not 0 <= args.margin < 1:
        return _fail("--margin is a fraction of the reference's gain over random play: 0 <= margin < 1")
    if args.eval_last > 1:
        if not sorrel:
            return _fail("--eval-last applies to sorrel games (GemGrid's learners train on during an evaluation)")
        if "upstream" in modes:
            return _fail("--eval-last > 1 cannot evaluate inside sorrel's run_experiment; compare "
                         "`sequential` instead (the same steps, bit for bit, tested)")
        if (args.eval_last - 1) * args.eval_every >= args.episodes:
            return _fail(f"--eval-last {args.eval_last} x --eval-every {args.eval_every} does not fit "
                         f"in --episodes {args.episodes}")
    try:  # reject a bad game or override here, in one line, instead of from every child
        check_game_name(args.game)
        cfg = Config()
        for item in args.overrides:
            set_key(cfg, *parse_override(item))
        validate(cfg)
    except (ConfigError, GameError) as err:
        return _fail(str(err))
    out_dir = os.path.dirname(os.path.abspath(args.output))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        return _fail(f"--output {args.output!r}: cannot create {out_dir!r} ({err.strerror})")

    from rich.console import Console
    from rich.table import Table

    from parallel_core.io import atomic_write
    from parallel_core.progress import progress_bar

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    seeds = args.seeds or [args.seed + r for r in range(args.repeats)]
    load_start = os.getloadavg()
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with progress_bar(len(modes) * args.repeats, "benchmark", quiet=args.quiet) as bar:
        for r in range(args.repeats):  # interleaved: every mode once per repeat
            # rotated: repeat r starts at mode r, so no mode always runs first (or after `all`)
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            random_of_seed = None  # random play depends only on the seed: played once per repeat
            for mode in order:
                cmd = [
                    sys.executable, __file__, "--child", mode, "--game", args.game,
                    "--epochs", str(args.epochs), "--episodes", str(args.episodes),
                    "--env-workers", str(args.env_workers), "--agents", str(args.agents),
                    "--seed", str(seeds[r]), "--replay-ratio", str(args.replay_ratio),
                    "--train-interval", str(args.train_interval),
                    "--eval-episodes", str(args.eval_episodes), "--repeats", "1",
                    "--eval-last", str(args.eval_last), "--eval-every", str(args.eval_every),
                    *(["--no-random"] if random_of_seed is not None else []),
                    *args.overrides,
                ]
                if _smoke():  # CI's smoke run: every mode in this process, one torch import
                    child = child_sorrel if sorrel else child_gemgrid
                    res = child(mode, parse_args(cmd[2:]))
                else:
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
                        print(f"bench_async_train: mode {mode} failed:\n{tail}", file=sys.stderr)
                        return 1
                    res = json.loads(proc.stdout.strip().splitlines()[-1])
                res["seed"] = seeds[r]
                res["position_in_repeat"] = order.index(mode)
                if random_of_seed is None:
                    random_of_seed = res["random_score"]
                res["random_score"] = random_of_seed
                runs[mode].append(res)
                bar.advance(1)
    med = {m: statistics.median(x["env_steps_per_s"] for x in v) for m, v in runs.items()}
    base = med.get("sequential")
    cores = len(os.sched_getaffinity(0))
    bound = cpu_bound_speedup(runs, cores)
    rows = []
    for mode, rs in runs.items():
        rows.append(
            {
                "mode": mode,
                "env_steps_per_s": med[mode],
                "speedup_vs_sequential": med[mode] / base if base else None,
                # CPU seconds per process (medians): what each mode costs, whatever the load
                "collector_cpu_s_median": statistics.median(x.get("collector_cpu_s", 0.0) for x in rs),
                "children_cpu_s_median": statistics.median(x.get("children_cpu_s", 0.0) for x in rs),
                "cpu_utilisation_median": statistics.median(x.get("cpu_utilisation", 0.0) for x in rs),
                "learner_wait_s_median": statistics.median(x.get("learner_wait_s", 0.0) for x in rs),
                "speedup_cpu_bound": bound.get(mode),
                "wall_s_median": statistics.median(x["wall_s"] for x in rs),
                "final_score_median": statistics.median(x["final_score"] for x in rs),
                "final_score_mean": statistics.fmean(x["final_score"] for x in rs),
                "final_score_std": statistics.stdev(x["final_score"] for x in rs) if len(rs) > 1 else 0.0,
                "final_score_per_seed": [x["final_score"] for x in rs],
                "seeds": [x["seed"] for x in rs],
                "random_score_median": statistics.median(x["random_score"] for x in rs),
                "env_steps": rs[0]["env_steps"],
                "updates_per_agent": rs[0]["updates_per_agent"],
                "runs": rs,
            }
        )
    report = {
        "benchmark": "agent-async-train execution layers",
        "game": args.game,
        "reward_name": rows[0]["runs"][0]["reward_name"],
        "machine": {
            "cores": os.cpu_count(),
            "affinity": cores,
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "note": "wall-clock numbers on a shared machine are noisy; compare ratios",
        },
        "settings": {
            k: getattr(args, k)
            for k in ("quick", "epochs", "episodes", "env_workers", "agents", "seed", "seeds", "replay_ratio",
                      "train_interval", "eval_episodes", "eval_last", "eval_every", "margin", "repeats",
                      "overrides")
        },
        "modes": rows,
        "peak_rss_mib_parent": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if sorrel:
        report["not_applicable"] = SORREL_NOT_APPLICABLE
        if "upstream" in med:
            report["upstream_env_steps_per_s"] = med["upstream"]
            if "all" in med:
                report["speedup_vs_upstream"] = med["all"] / med["upstream"]
    by_mode = {row["mode"]: row for row in rows}
    report["learning"] = {
        row["mode"]: {"mean": row["final_score_mean"], "std": row["final_score_std"],
                      "per_seed": row["final_score_per_seed"]}
        for row in rows
    }
    report["learning"]["seeds"] = seeds
    report["learning"]["random_per_seed"] = [x["random_score"] for x in runs[modes[0]]]
    ref = "upstream" if "upstream" in by_mode else "sequential" if "sequential" in by_mode else None
    if ref is not None:  # one seed gives no interval: the verdict is then None (undecided)
        paired = learning_verdict(
            {m: by_mode[m]["final_score_per_seed"] for m in modes},
            report["learning"]["random_per_seed"], ref, args.margin,
        )
        report["learning"]["paired"] = paired
        if "all" in paired["vs_reference"]:
            report["learning"]["all_at_least_as_good_as"] = ref
            report["learning"]["all_at_least_as_good"] = paired["vs_reference"]["all"]["non_inferior"]
    with atomic_write(args.output, "w") as f:
        json.dump(report, f, indent=2)
    table = Table(
        title=f"agent-async-train on {args.game}: medians of {args.repeats} interleaved repeat(s) "
        f"(seeds {', '.join(map(str, seeds))})"
    )
    for col in ("mode", "env steps/s", "speedup", "CPU bound", "CPU s (main + children)", "wall s",
                f"score ({report['reward_name']})", "score mean +- std", "random"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for row in rows:
        table.add_row(
            row["mode"],
            f"{row['env_steps_per_s']:.0f}",
            f"{row['speedup_vs_sequential']:.2f}x" if base else "-",
            f"{row['speedup_cpu_bound']:.2f}x" if row["speedup_cpu_bound"] else "-",
            f"{row['collector_cpu_s_median']:.2f} + {row['children_cpu_s_median']:.2f}",
            f"{row['wall_s_median']:.2f}",
            f"{row['final_score_median']:.2f}",
            f"{row['final_score_mean']:.2f} +- {row['final_score_std']:.2f}",
            f"{row['random_score_median']:.2f}",
        )
    console = Console(file=sys.stderr if args.quiet else sys.stdout, width=140)
    console.print(table)
    if "speedup_vs_upstream" in report:
        console.print(f"all vs sorrel's own loop: {report['speedup_vs_upstream']:.2f}x")
    if "paired" in report["learning"]:
        paired = report["learning"]["paired"]
        def interval(d: dict) -> str:
            return f"{d['mean']:+.2f}" + (f" (95% CI {d['ci95'][0]:+.2f} .. {d['ci95'][1]:+.2f})" if d["ci95"] else "")

        console.print(f"{paired['reference']} - random, paired over {len(seeds)} seed(s): "
                      f"{interval(paired['reference_minus_random'])}")
        for mode, d in paired["vs_reference"].items():
            verdict = {None: "undecided", True: "yes", False: "not shown"}[d["non_inferior"]]
            console.print(f"{mode} - {paired['reference']}: {interval(d)}; at least as good (CI lower bound "
                          f"above -{paired['margin_fraction']:.0%} of {paired['reference']}'s gain over "
                          f"random): {verdict}")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
