#!/usr/bin/env python
"""Benchmark `cogames eval`: serial vs episode workers vs agent workers vs both.

Two workloads on the same mission:

- ``busy``: every agent runs the CPU-heavy ``busy`` policy (pure-Python work holding
  the GIL), so the agents' policies dominate the step time;
- ``random``: the env dominates and each action is nearly free.

Modes (``--jobs J``, default 2):

- ``serial``   ``--jobs 0``
- ``episodes`` ``--jobs J``                        (J episode worker processes)
- ``agents``   ``--jobs J --parallel-policy``      (episodes in turn, J agent workers)
- ``both``     ``--jobs 2J --parallel-policy --agent-workers 2`` (J episode workers x 2
  agent workers; the worker budget caps it at the cores available, so on a 2-core
  machine it degrades to what fits, and the layout actually used is recorded)

Each mode runs the real CLI in a subprocess; the modes are interleaved, ``--repeats``
rounds of all of them, and the median wall time is reported (a shared machine drifts;
interleaving spreads the drift over every mode). The JSON outputs of all modes are
checked to be byte-identical, and the results go to a JSON file plus a table. Wall time
is the CLI's own evaluation time (from its status line), not Python start-up.

``--real`` benchmarks real CoGames missions instead (needs the ``upstream`` extra):
upstream's own ``cogames run`` (``python -m cogames run``, a subprocess) against ours
serial, ``--jobs 2`` and ``--jobs 2 --parallel-policy``, same flags and seeds, with a
scripted policy (``starter``) and, when upstream's neural dependencies are importable, a
neural one (``lstm``). There wall time is the whole process (start-up included, as a user
waits for it), the speedup is against upstream, and ``equal_to_upstream`` says whether
the JSON is byte-identical to upstream's.

    uv run python tools/bench_cogames.py                 # ~1-2 minutes on 2 cores
    uv run python tools/bench_cogames.py --quick         # smoke run (seconds; writes
                                                         # bench-results/cogames-quick.json)
    uv run python tools/bench_cogames.py --real          # real missions vs upstream
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATUS = re.compile(r"(\d+) episodes, (\d+) steps in ([\d.]+) s")
LAYOUT = re.compile(r"episodes; (.*)$", re.M)


OURS = [sys.executable, "-m", "cogames_parallel", "eval"]
UPSTREAM = [sys.executable, "-m", "cogames", "run"]


# --real: byte-compiled modules are cached here (PYTHONPYCACHEPREFIX), so every process
# imports as an installed package does, not recompiling upstream's modules each time
# (a PYTHONDONTWRITEBYTECODE environment would otherwise add ~10 s to every run)
PYCACHE: str | None = None


def run_cli(args: list[str], command: list[str] = OURS, status_line: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PARALLEL_RL_SMOKE"}  # sizes are ours
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*command, *args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        total = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(
            f"bench: {' '.join(command[1:])} {' '.join(args)} failed ({proc.returncode}):\n"
            f"{stderr[-3000:]}"
        )
    m = STATUS.search(stderr)
    if status_line and not m:
        raise SystemExit(f"bench: no status line in stderr:\n{stderr}")
    lay = LAYOUT.search(stderr)
    return {
        "wall_s": float(m.group(3)) if status_line else total,
        "process_s": total,
        "eval_s": float(m.group(3)) if m else None,
        "load_avg_1m": [load, os.getloadavg()[0]],  # before and after this run
        "steps": int(m.group(2)) if m else 0,
        "episodes": int(m.group(1)) if m else 0,
        "layout": lay.group(1).strip() if lay else "",
        # ru_maxrss of a waited child covers its waited descendants too (the largest one)
        "peak_rss_mb": usage.ru_maxrss / 1024,
        # CPU of the whole process tree: with wall time it shows how parallel a run was,
        # even on a machine shared with other jobs
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "digest": hashlib.sha256(stdout).hexdigest(),
        "stdout": stdout,
    }


def median_row(runs: list[dict]) -> dict:
    """The run with the median wall time (its other fields are that run's), plus every time."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["wall_s"] = statistics.median(r["wall_s"] for r in runs)
    row["wall_s_all"] = [r["wall_s"] for r in runs]
    row["digests"] = sorted({r["digest"] for r in runs})
    row["steps_per_s"] = row["steps"] / row["wall_s"] if row["steps"] else None
    return row


def neural_available() -> str | None:
    """Why upstream's neural policies cannot run here, or None if they can."""
    for mod in ("torch", "pufferlib", "einops"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not importable (see docs/cogames-parallel.md, neural policies)"
    return None


def bench_real(args) -> int:
    """Upstream `cogames run` vs ours on real missions; medians of interleaved repeats."""
    from rich.console import Console
    from rich.table import Table

    global PYCACHE
    if importlib.util.find_spec("cogames") is None:
        print("bench: error: --real needs upstream CoGames (uv sync --extra upstream)", file=sys.stderr)
        return 2
    cache = tempfile.TemporaryDirectory(prefix="bench-cogames-pycache-")
    PYCACHE = cache.name
    warm = "import cogames.main, cogames.cli.mission, mettagrid.runner.rollout, cogames_parallel.cli"
    run_cli(["-c", warm], [sys.executable], status_line=False)  # fill the cache once
    episodes, steps, repeats = (2, 10, 1) if args.quick else (args.episodes, args.steps, args.repeats)
    mission = "arena" if args.mission == "harvest.open" else args.mission.removeprefix("cogames:")
    flags = ["-e", str(episodes), "-s", str(steps), "--seed", "42", "--format", "json",
             "--action-timeout-ms", str(args.action_timeout_ms)]  # fmt: skip
    j = args.jobs
    modes = {
        "upstream": None,
        "serial": ["--jobs", "0"],
        "jobs": ["--jobs", str(j)],
        "jobs+parallel-policy": ["--jobs", str(j), "--parallel-policy"],
    }
    policies = {"scripted": "starter"}
    skipped = {}
    why = neural_available()
    if why is None:
        policies["neural"] = "lstm"
    else:
        skipped["neural"] = why
    if args.workloads:
        policies = {k: v for k, v in policies.items() if k in args.workloads.split(",")}
    results: dict = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "python": sys.version.split()[0],
            "load_avg_1m": os.getloadavg()[0],
        },
        "params": {"mission": mission, "episodes": episodes, "steps": steps, "jobs": j,
                   "repeats": repeats, "quick": args.quick,
                   "action_timeout_ms": args.action_timeout_ms},  # fmt: skip
        "note": "wall_s is the whole process (start-up included, modules byte-compiled once "
        "beforehand); median of interleaved repeats; load_avg_1m per run: before, after; "
        "neural rows are never equal to upstream (unseeded weights and sampling)",
        "workloads": {},
        "skipped": skipped,
    }
    table = Table(title=f"real CoGames: {mission}, {episodes} episodes x {steps} steps")
    for col in ("policy", "mode", "wall s", "speedup vs upstream", "peak MB", "= upstream"):
        table.add_column(col, justify="left" if col in ("policy", "mode") else "right")
    for wname, policy in policies.items():
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for _ in range(repeats):
            for mname, margs in modes.items():
                if margs is None:
                    r = run_cli(["-m", mission, "-p", policy, *flags], UPSTREAM, status_line=False)
                else:
                    r = run_cli(["-m", f"cogames:{mission}", "-p", policy, *flags, *margs],
                                status_line=False)  # fmt: skip
                # action timeouts depend on wall time: on a loaded machine they, not the
                # parallelism, are what makes a run differ from another
                r["action_timeouts"] = sum(
                    p["action_timeouts"]
                    for m in json.loads(r.pop("stdout"))["missions"]
                    for p in (m["mission_summary"] or {}).get("policy_summaries", [])
                )
                runs[mname].append(r)
                print(
                    f"bench: {wname} {mname:20s} {r['wall_s']:.1f} s, "
                    f"{r['action_timeouts']} action timeouts, load "
                    f"{r['load_avg_1m'][0]:.1f}-{r['load_avg_1m'][1]:.1f}",
                    file=sys.stderr,
                )
        rows = {m: median_row(rs) for m, rs in runs.items()}
        for m, rs in runs.items():
            rows[m]["action_timeouts_all"] = [r["action_timeouts"] for r in rs]
        base = rows["upstream"]
        for mname, r in rows.items():
            r["speedup_vs_upstream"] = base["wall_s"] / r["wall_s"]
            r["equal_to_upstream"] = r["digests"] == base["digests"] and len(r["digests"]) == 1
            table.add_row(wname, mname, f"{r['wall_s']:.1f}", f"{r['speedup_vs_upstream']:.2f}x",
                          f"{r['peak_rss_mb']:.0f}", "yes" if r["equal_to_upstream"] else "NO")  # fmt: skip
        results["workloads"][wname] = rows
    results["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    Console(file=sys.stderr).print(table)
    for name, why in skipped.items():
        print(f"bench: skipped {name}: {why}", file=sys.stderr)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.output)
    print(f"bench: wrote {args.output}", file=sys.stderr)
    # upstream's neural policies start from unseeded random weights and sample actions with
    # torch's global RNG: two upstream runs differ, so only the scripted rows must be equal
    bad = [f"{w}/{m}" for w, rows in results["workloads"].items() for m, r in rows.items()
           if not r["equal_to_upstream"] and w != "neural"]  # fmt: skip
    if bad:
        print(f"bench: error: output differs from upstream in {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def _short_layout(text: str) -> str:
    """'2 episode workers, agents in-process (budget 2)' -> '2x1'."""
    e = re.search(r"(\d+) episode workers", text)
    a = re.search(r"(\d+) agent workers", text)
    return f"{e.group(1) if e else 1}x{a.group(1) if a else 1}"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--agents", type=int, default=4, help="agents per episode (busy needs 4+)")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--work", type=int, default=6000, help="busy policy: integer rounds per action")
    ap.add_argument("--mission", default="harvest.open")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument(
        "--action-timeout-ms",
        type=int,
        default=250,
        help="--real: the action timeout given to upstream and ours (late actions become "
        "no-ops, so a loaded machine changes results; raise it there)",
    )
    ap.add_argument(
        "--workloads",
        help="--real: comma-separated subset of scripted,neural (default: both, when available)",
    )
    ap.add_argument(
        "--real",
        action="store_true",
        help="real CoGames missions: upstream `cogames run` vs ours (needs the upstream extra)",
    )
    ap.add_argument(
        "--output",
        type=Path,
        help="JSON results (default bench-results/cogames.json; with --quick cogames-quick.json)",
    )
    args = ap.parse_args()
    from parallel_core.cli import smoke_mode

    if args.repeats < 1 or args.episodes < 1 or args.steps < 1 or args.jobs < 1:
        ap.error("--repeats, --episodes, --steps and --jobs must be >= 1")
    args.quick = args.quick or smoke_mode()
    if args.output is None:  # a smoke run must not overwrite the recorded measurement
        name = "cogames" + ("-real" if args.real else "") + ("-quick" if args.quick else "")
        args.output = Path("bench-results") / f"{name}.json"
    try:  # fail now, not after minutes of benchmarking
        args.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.error(f"--output {args.output}: {exc.strerror}")
    if args.real:
        return bench_real(args)
    if args.quick:
        args.episodes, args.steps, args.work, args.repeats = 4, 20, 2000, 1
    j = args.jobs
    modes = {
        "serial": ["--jobs", "0"],
        "episodes": ["--jobs", str(j)],
        "agents": ["--jobs", str(j), "--parallel-policy"],
        "both": ["--jobs", str(2 * j), "--parallel-policy", "--agent-workers", "2"],
    }
    common = [
        "-m",
        args.mission,
        "-c",
        str(args.agents),
        "-s",
        str(args.steps),
        "--action-timeout-ms",
        "0",
        "--format",
        "json",
        "--seed",
        "7",
    ]
    workloads = {
        "busy": ["-p", f"class=busy,kw.work={args.work}", "-e", str(args.episodes)],
        "random": ["-p", "random", "-e", str(args.episodes * 4)],
    }
    from rich.console import Console
    from rich.table import Table

    results: dict = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "python": sys.version.split()[0],
            "load_avg_1m": os.getloadavg()[0],
        },
        "params": vars(args) | {"output": str(args.output)},
        "workloads": {},
    }
    table = Table(title=f"cogames eval benchmark ({results['machine']['cores']} cores)")
    # layout = episode workers x agent workers per episode; cpu s = whole process tree
    for col in (
        "workload",
        "mode",
        "layout",
        "wall s",
        "cpu s",
        "steps/s",
        "speedup",
        "peak MB",
        "same",
    ):
        table.add_column(col, justify="left" if col in ("workload", "mode", "layout") else "right")
    for wname, wargs in workloads.items():
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for _ in range(args.repeats):  # interleaved: each round runs every mode once
            for mname, margs in modes.items():
                r = run_cli(common + wargs + margs)
                runs[mname].append(r)
                print(
                    f"bench: {wname:6s} {mname:8s} {r['wall_s']:.2f} s ({r['layout']})",
                    file=sys.stderr,
                )
        for rs in runs.values():
            for r in rs:
                r.pop("stdout", None)
        rows = {m: median_row(rs) for m, rs in runs.items()}
        base = rows["serial"]["wall_s"]
        for mname, r in rows.items():
            r["speedup"] = base / r["wall_s"]
            r["identical_to_serial"] = r["digests"] == rows["serial"]["digests"]
            table.add_row(
                wname,
                mname,
                _short_layout(r["layout"]),
                f"{r['wall_s']:.2f}",
                f"{r['cpu_s']:.2f}",
                f"{r['steps_per_s']:.0f}",
                f"{r['speedup']:.2f}x",
                f"{r['peak_rss_mb']:.0f}",
                "yes" if r["identical_to_serial"] else "NO",
            )
        results["workloads"][wname] = rows
    Console(file=sys.stderr).print(table)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.output)
    print(f"bench: wrote {args.output}", file=sys.stderr)
    bad = [
        f"{w}/{m}"
        for w, rows in results["workloads"].items()
        for m, r in rows.items()
        if not r["identical_to_serial"]
    ]
    if bad:
        print(f"bench: error: output differs from serial in {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
