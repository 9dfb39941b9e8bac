"""End-to-end tests of the `cogames` CLI, run as a user would (subprocesses, mpirun)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "packages" / "cogames-parallel" / "tests" / "helper_policies.py"
COGAMES = [sys.executable, "-m", "cogames_parallel"]


def cogames(
    *args: str, timeout: float = 180, check_rc: int | None = 0
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*COGAMES, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


DONE_WHEN = [
    "eval",
    "-m",
    "harvest.open",
    "-p",
    "random",
    "-p",
    "greedy",
    "--episodes",
    "4",
    "--format",
    "json",
]


def test_done_when_output_is_byte_identical_across_parallel_settings():
    par = cogames(*DONE_WHEN, "--jobs", "2", "--parallel-policy").stdout
    data = json.loads(par)
    assert len(data["episodes"]) == 4 and data["failed"] == []
    assert cogames(*DONE_WHEN, "--jobs", "0").stdout == par
    assert cogames(*DONE_WHEN, "--jobs", "2").stdout == par


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "cogames"
    assert exe.exists()
    proc = subprocess.run([str(exe), "eval", "--help"], capture_output=True, text=True, timeout=60)
    assert (
        proc.returncode == 0 and "examples:" in proc.stdout and "--parallel-policy" in proc.stdout
    )


def test_bad_input_is_one_line_exit_2():
    for args, msg in [
        (["eval", "-m", "no.such"], "cogames: error: no mission matches 'no.such'"),
        (["eval", "-p", "class=random,proportion=-1"], "proportion must be > 0"),
        (["eval", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ]:
        proc = cogames(*args, check_rc=2)
        assert msg in proc.stderr and proc.stdout == ""


def test_crashing_policy_exits_nonzero_and_names_episodes():
    proc = cogames(
        "eval",
        "-m",
        "harvest.open",
        "-p",
        "random",
        "-p",
        f"class={HELPERS}:CrashPolicy,kw.at=4",
        "-e",
        "3",
        "-s",
        "10",
        "--jobs",
        "2",
        "--parallel-policy",
        "--format",
        "json",
        "-q",
        check_rc=1,
    )
    failed = json.loads(proc.stdout)["failed"]
    assert [f["episode"] for f in failed] == [0, 1, 2]
    assert "3 of 3 episodes failed" in proc.stderr and "boom at step 4" in proc.stderr


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    kids = [int(x) for x in out.split()]
    return kids + [g for k in kids for g in _descendants(k)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("mode", [["--jobs", "2"], ["--jobs", "2", "--parallel-policy"]])
def test_ctrl_c_leaves_no_orphans(mode):
    proc = subprocess.Popen(
        [
            *COGAMES,
            "eval",
            "-m",
            "harvest.open",
            "-p",
            "class=busy,kw.work=200000",
            "-e",
            "50",
            "-q",
            *mode,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    kids: list[int] = []
    deadline = time.time() + 30
    while time.time() < deadline and len(kids) < 2:
        time.sleep(0.2)
        kids = _descendants(proc.pid)
    assert len(kids) >= 2, "workers did not start"
    time.sleep(0.5)
    kids = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"interrupted" in err
    time.sleep(0.5)
    assert [k for k in kids if _alive(k)] == []


@pytest.mark.skipif(
    shutil.which("mpirun", path=str(Path(sys.executable).parent)) is None, reason="no mpirun"
)
def test_mpirun_backend_is_byte_identical_to_serial():
    args = [
        "eval",
        "-m",
        "harvest.*",
        "-v",
        "small",
        "-p",
        "random",
        "-p",
        "greedy:2",
        "-e",
        "3",
        "-s",
        "25",
        "--format",
        "json",
        "--action-timeout-ms",
        "0",
    ]
    serial = cogames(*args).stdout
    mpirun = str(Path(sys.executable).parent / "mpirun")
    proc = subprocess.run(
        [mpirun, "-n", "2", *COGAMES, *args, "--backend", "mpi"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == serial


@pytest.mark.skipif(
    shutil.which("mpirun", path=str(Path(sys.executable).parent)) is None, reason="no mpirun"
)
def test_a_killed_mpi_rank_leaves_the_finished_episodes_in_the_output_file(tmp_path):
    out = tmp_path / "out.json"
    # rank 1 (tasks 3-5) is SIGKILLed in its second episode, once rank 0 has written 4
    # finished episodes (its own 3 and rank 1's first, streamed to it); mpirun then kills
    # rank 0 too, and the output file is what rank 0 last wrote
    spec = f"class={HELPERS}:KillRankPolicy,kw.wait_for={out},kw.count=4"
    mpirun = str(Path(sys.executable).parent / "mpirun")
    proc = subprocess.run(
        [mpirun, "-n", "2", *COGAMES, "eval", "-m", "harvest.open", "-v", "small", "-p", spec,
         "-e", "6", "-s", "10", "--backend", "mpi", "-o", str(out), "-q"],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    data = json.loads(out.read_text())
    assert data["partial"].startswith("4 of 6 episodes finished")
    assert [ep["status"] for ep in data["episodes"]] == ["ok"] * 4 + ["missing"] * 2
    assert [f["episode"] for f in data["failed"]] == [4, 5]


@pytest.mark.skipif(
    shutil.which("mpirun", path=str(Path(sys.executable).parent)) is None, reason="no mpirun"
)
def test_an_episode_that_kills_its_process_under_mpi_fails_alone():
    # under --backend mpi episodes run in an episode worker, so the rank survives
    mpirun = str(Path(sys.executable).parent / "mpirun")
    proc = subprocess.run(
        [mpirun, "-n", "2", *COGAMES, "eval", "-m", "harvest.open", "-v", "small", "-p",
         f"class={HELPERS}:DiePolicy,kw.mod=5", "-e", "6", "-s", "10", "--backend", "mpi",
         "--format", "json", "-q"],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("cogames: error: 4 of 6 episodes failed")
    assert [ep["status"] for ep in data["episodes"]].count("ok") == 2


def test_imitate_then_evaluate_mlp(tmp_path):
    weights = tmp_path / "mlp.pt"
    cogames(
        "imitate",
        "-m",
        "harvest.open",
        "-e",
        "4",
        "--epochs",
        "15",
        "-o",
        str(weights),
        timeout=300,
    )
    assert weights.exists()
    base = [
        "eval",
        "-m",
        "harvest.open",
        "-p",
        f"class=mlp,data={weights}",
        "-p",
        "random",
        "-e",
        "4",
        "--format",
        "json",
        "--action-timeout-ms",
        "0",
        "-q",
    ]
    serial = cogames(*base, timeout=300).stdout
    assert cogames(*base, "--jobs", "2", "--parallel-policy", timeout=300).stdout == serial
    stats = json.loads(serial)["policy_stats"]["harvest.open"]
    assert stats["mlp"]["mean_reward"] > stats["random"]["mean_reward"]
    wrong = cogames(
        "eval", "-m", "harvest.open", "-p", f"class=mlp,data={tmp_path / 'missing.pt'}", check_rc=2
    )
    assert "does not exist" in wrong.stderr


def test_user_mission_file_through_the_cli(tmp_path):
    f = tmp_path / "yard.yaml"
    f.write_text(
        "name: yard\nsite: assembly\nparams: {width: 9, height: 9, num_agents: 2, max_steps: 30, need: 2}\n"
    )
    out = cogames(
        "eval", "-m", str(f), "-p", "greedy", "-e", "2", "--jobs", "2", "--format", "json", "-q"
    ).stdout
    data = json.loads(out)
    assert (
        data["config"]["missions"][0]["name"] == "yard"
        and data["config"]["missions"][0]["agents"] == 2
    )
    assert all(ep["steps"] == 30 for ep in data["episodes"])
