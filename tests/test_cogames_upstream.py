"""Real CoGames missions end to end: our `cogames eval` against upstream's own `cogames run`.

Upstream's CLI is run as `python -m cogames run ...` (its own entry point); ours as the
`cogames` console script and `python -m cogames_parallel`. Episodes are a few steps long
(`-s`) so the suite stays short; the values still come from real missions and policies.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

pytest.importorskip("cogames.cli.mission", reason="upstream CoGames (the upstream extra) not installed")

ROOT = Path(__file__).resolve().parents[1]
PKG_TESTS = ROOT / "packages" / "cogames-parallel" / "tests"
BIN = Path(sys.executable).parent
OURS = [str(BIN / "cogames")]
UPSTREAM = [sys.executable, "-m", "cogames"]
# two missions (mission-level parallelism), a 3:1 mix, fewer cogs, a fixed map seed
FLAGS = ["-m", "arena", "-m", "tutorial", "-p", "starter:3", "-p", "noop", "-c", "4",
         "-e", "3", "-s", "12", "--seed", "7", "--map-seed", "3", "--format", "json"]  # fmt: skip


# Every subprocess imports upstream's modules; under PYTHONDONTWRITEBYTECODE each would
# recompile them (~8 s of CPU). One byte-code cache for this module's subprocesses halves it.
PYCACHE = tempfile.mkdtemp(prefix="cogames-upstream-pycache-")
atexit.register(shutil.rmtree, PYCACHE, True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PARALLEL_RL_SMOKE", None)  # smoke mode would shrink our run, not upstream's
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env["PYTHONPATH"] = os.pathsep.join([str(PKG_TESTS), env.get("PYTHONPATH", "")])
    return env


def sh(cmd: list[str], rc: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=_env())
    if rc is not None:
        assert proc.returncode == rc, proc.stderr[-3000:]
    return proc


def ours_flags() -> list[str]:
    return [("cogames:" + f if prev == "-m" else f) for prev, f in zip(["", *FLAGS], FLAGS)]


@pytest.fixture(scope="module")
def upstream_json() -> str:
    return sh([*UPSTREAM, "run", *FLAGS]).stdout


def test_serial_equals_upstream_cogames_run_byte_for_byte(upstream_json, capsys):
    data = json.loads(upstream_json)
    assert [m["mission_name"] for m in data["missions"]] == ["arena", "tutorial"]
    assert [p["agent_count"] for p in data["missions"][0]["mission_summary"]["policy_summaries"]] == [3, 1]
    # in this process (the console script is the same main(); the MPI test runs it)
    code, out, err = run_ours(capsys, "eval", *ours_flags(), "-q")
    assert code == 0 and out == upstream_json, err


def run_ours(capsys, *argv: str) -> tuple[int, str, str]:
    """Our CLI in this process (imports paid once); episode workers are still real processes."""
    from cogames_parallel.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def helpers_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PKG_TESTS))


def test_episode_and_mission_workers_equal_upstream(upstream_json, capsys, tmp_path):
    out_file = tmp_path / "out.json"  # rewritten with partial results while the run goes on
    code, out, err = run_ours(capsys, "eval", *ours_flags(), "--jobs", "2", "-q", "-o", str(out_file))
    assert code == 0 and out == upstream_json, err
    assert out_file.read_text() == upstream_json  # the final write: no "partial" note


def test_agent_workers_equal_upstream(upstream_json, capsys):
    # the agents of each step on 2 agent workers, observations through shared memory
    code, out, err = run_ours(capsys, "eval", *ours_flags(), "--jobs", "2", "--parallel-policy")
    assert code == 0 and out == upstream_json, err
    assert "2 agent workers each" in err


def test_agent_workers_step_a_batching_policys_agents_in_one_call(tmp_path, capsys, helpers_on_path):
    log = tmp_path / "calls"
    spec = f"class=upstream_helpers.GroupPolicy,kw.log={log}"
    flags = ["eval", "-m", "cogames:arena", "-p", spec, "-p", "starter", "-e", "2", "-s", "6",
             "--format", "json", "-q"]  # fmt: skip
    code, serial, err = run_ours(capsys, *flags)
    assert code == 0, err
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["4"] * 12  # upstream's own
    log.unlink()
    code, out, err = run_ours(capsys, *flags, "--jobs", "2", "--parallel-policy")
    assert code == 0 and out == serial, err
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    # 4 agents x 12 steps, at most one call per agent worker per step, none in this process
    assert sum(n for _, n in calls) == 48 and len(calls) <= 24
    assert os.getpid() not in {pid for pid, _ in calls}


def test_a_dead_agent_worker_fails_only_its_episode(tmp_path, capsys, helpers_on_path):
    spec = f"class=upstream_helpers.DieOncePolicy,kw.flag={tmp_path / 'died'}"
    code, out, err = run_ours(capsys, "eval", "-m", "cogames:arena", "-p", spec, "-e", "2", "-s", "5",
                              "--jobs", "2", "--parallel-policy", "--format", "json", "-q")  # fmt: skip
    data = json.loads(out)
    assert code == 1 and [f["episode"] for f in data["failed"]] == [0], err
    assert re.search(r"agent worker [01] \(agents \d-\d\) exited with code 7", data["failed"][0]["error"])
    assert data["missions"][0]["mission_summary"]["episodes"] == 1  # the next episode ran
    assert err.count("\n") == 1 and err.startswith("cogames: error: 1 of 2 episodes failed")


@pytest.mark.skipif(shutil.which("mpirun", path=str(BIN)) is None, reason="no mpirun")
def test_mpi_ranks_equal_upstream(upstream_json):
    out = sh([str(BIN / "mpirun"), "-n", "2", *OURS, "eval", *ours_flags(), "--backend", "mpi", "-q"])
    assert out.stdout == upstream_json


def test_replays_are_upstreams_format(tmp_path, capsys):
    from cogames_parallel.coexist import run_upstream

    code, _, err = run_ours(capsys, "eval", "-m", "cogames:arena", "-p", "starter", "-e", "2",
                            "-s", "5", "-q", "--format", "json",
                            "--save-replay-dir", str(tmp_path / "ours"))  # fmt: skip
    assert code == 0, err
    assert run_upstream(["run", "-m", "arena", "-p", "starter", "-e", "1", "-s", "5",
                         "--format", "json", "--save-replay-dir", str(tmp_path / "up")]) == 0  # fmt: skip
    capsys.readouterr()
    ours = sorted((tmp_path / "ours").glob("*.json.z"))
    (up,) = (tmp_path / "up").glob("*.json.z")
    assert [p.name for p in ours] == ["arena.ep0000.json.z", "arena.ep0001.json.z"]
    a, b = (json.loads(zlib.decompress(p.read_bytes())) for p in (ours[0], up))
    # the same replay document as upstream's own file (which `cogames replay` opens),
    # and for the same seed the same episode
    assert set(a) == set(b) and a.get("num_agents") == b.get("num_agents")
    assert a.get("max_steps") == b.get("max_steps")


def test_a_hung_real_policy_fails_its_episode_and_the_run_ends(capsys, helpers_on_path):
    code, out, err = run_ours(capsys, "eval", "-m", "cogames:arena", "-p",
                              "class=upstream_helpers.HangPolicy", "-e", "1", "-s", "10",
                              "--episode-timeout-s", "3", "--format", "json", "-q")  # fmt: skip
    data = json.loads(out)
    assert code == 1 and "did not finish within --episode-timeout-s 3 s" in data["failed"][0]["error"]
    assert data["missions"][0]["mission_summary"] is None


@pytest.mark.parametrize("mode", [["--jobs", "2"], ["--jobs", "2", "--parallel-policy"]])
def test_real_policy_error_keeps_a_trimmed_traceback_and_exit_1(capsys, helpers_on_path, mode):
    code, out, err = run_ours(capsys, "eval", "-m", "cogames:arena", "-p",
                              "class=upstream_helpers.CrashPolicy", "-e", "1", "-s", "5",
                              "--format", "json", "-q", *mode)  # fmt: skip
    failed = json.loads(out)["failed"][0]
    assert code == 1 and "ValueError: boom from a real-mission policy" in failed["error"]
    # on an agent worker: the worker's own traceback, down to the policy's line
    assert "boom" in failed["traceback"] and len(failed["traceback"].splitlines()) <= 13
    assert "upstream_helpers.py" in failed["traceback"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "cogames:nosuch"], "mission 'cogames:nosuch'"),
        (["-m", "cogames:arena", "-p", "nosuchpolicy"], "Could not find policy class"),
        (["-m", "cogames:arena", "-p", "/nonexistent-bundle"], "policy '/nonexistent-bundle'"),
        (["-m", "cogames:arena", "-m", "harvest.open"], "cannot be mixed"),
        (["-m", "cogames:arena", "--seed", str(2**31)], "mettagrid takes a C int"),
        (["-m", "cogames:arena", "-c", "300"], "-c/--cogs 300 is more than the 56 spawn points"),
    ],
)
def test_real_mission_usage_errors_are_one_line_exit_2(capsys, args, message):
    code, out, err = run_ours(capsys, "eval", *args, "-e", "1", "-s", "2")
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def test_upstream_subcommands_are_forwarded_and_eval_stays_ours(tmp_path):
    # upstream's own console script (as installed when it wins the bin/cogames race) runs
    # our eval through the .pth hook; the commands we do not implement stay upstream's
    script = tmp_path / "cogames"
    script.write_text("import sys\nfrom cogames.main import app\nsys.exit(app())\n")
    proc = sh([sys.executable, str(script), "eval", "--help"])
    assert "--parallel-policy" in proc.stdout and "cogames:arena" in proc.stdout
    proc = sh([*OURS, "replay", "--help"])
    assert "--parallel-policy" not in proc.stdout and "replay" in proc.stdout.lower()


def test_no_mission_runs_a_real_one(capsys, monkeypatch):
    monkeypatch.setenv("PARALLEL_RL_SMOKE", "1")  # 2 episodes of 20 steps
    code, out, err = run_ours(capsys, "--format", "json", "-q")
    (mission,) = json.loads(out)["missions"]
    assert code == 0 and mission["mission_name"] == "arena"
    assert mission["mission_summary"]["episodes"] == 2
    assert mission["mission_summary"]["policy_summaries"][0]["agent_count"] == 8
