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

Each mode runs the real CLI in a subprocess (best wall time of ``--repeats``), the
JSON outputs of all modes are checked to be byte-identical, and the results go to a
JSON file plus a table. Wall time is the CLI's own evaluation time (from its status
line), not Python start-up.

    uv run python tools/bench_cogames.py                 # ~1-2 minutes on 2 cores
    uv run python tools/bench_cogames.py --quick         # smoke run (seconds; writes
                                                         # bench-results/cogames-quick.json)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATUS = re.compile(r"(\d+) episodes, (\d+) steps in ([\d.]+) s")
LAYOUT = re.compile(r"episodes; (.*)$", re.M)


def run_cli(args: list[str]) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cogames_parallel", "eval", *args], stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        total = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(
            f"bench: cogames eval {' '.join(args)} failed ({proc.returncode}):\n{stderr}"
        )
    m = STATUS.search(stderr)
    if not m:
        raise SystemExit(f"bench: no status line in stderr:\n{stderr}")
    lay = LAYOUT.search(stderr)
    return {
        "wall_s": float(m.group(3)),
        "process_s": total,
        "steps": int(m.group(2)),
        "episodes": int(m.group(1)),
        "layout": lay.group(1).strip() if lay else "",
        # ru_maxrss of a waited child covers its waited descendants too (the largest one)
        "peak_rss_mb": usage.ru_maxrss / 1024,
        # CPU of the whole process tree: with wall time it shows how parallel a run was,
        # even on a machine shared with other jobs
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "digest": hashlib.sha256(stdout).hexdigest(),
    }


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
        "--output",
        type=Path,
        help="JSON results (default bench-results/cogames.json; with --quick cogames-quick.json)",
    )
    args = ap.parse_args()
    if args.quick:
        args.episodes, args.steps, args.work, args.repeats = 4, 20, 2000, 1
    if args.output is None:  # a smoke run must not overwrite the recorded measurement
        name = "cogames-quick.json" if args.quick else "cogames.json"
        args.output = Path("bench-results") / name
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
        rows = {}
        for mname, margs in modes.items():
            runs = [run_cli(common + wargs + margs) for _ in range(args.repeats)]
            best = min(runs, key=lambda r: r["wall_s"])
            best["wall_s_all"] = [r["wall_s"] for r in runs]
            best["steps_per_s"] = best["steps"] / best["wall_s"]
            rows[mname] = best
            print(
                f"bench: {wname:6s} {mname:8s} {best['wall_s']:.2f} s ({best['layout']})",
                file=sys.stderr,
            )
        base = rows["serial"]["wall_s"]
        for mname, r in rows.items():
            r["speedup"] = base / r["wall_s"]
            r["identical_to_serial"] = r["digest"] == rows["serial"]["digest"]
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
    args.output.parent.mkdir(parents=True, exist_ok=True)
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
