"""Nested pools (episode workers with their own agent workers) leave no process behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = """
import sys
from cogames_parallel.evaluate import make_plan
from cogames_parallel.runners import ProcessRunner
plan = make_plan(["harvest.open"], ["class=busy,kw.work=200000"], episodes=20, action_timeout_ms=0)
try:
    with ProcessRunner(2, agent_workers=2) as runner:  # 2 episode workers x 2 agent workers
        runner.run(plan.tasks)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _descendants(pid):
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    kids = [int(x) for x in out.split()]
    return kids + [g for k in kids for g in _descendants(k)]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "kill-main"])
def test_nested_workers_are_torn_down(how):
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    kids = []
    deadline = time.time() + 60
    while time.time() < deadline and len(kids) < 6:  # 2 episode + 4 agent workers
        time.sleep(0.2)
        kids = _descendants(proc.pid)
    assert len(kids) == 6, kids
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup at all: PR_SET_PDEATHSIG must do it
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == (130 if how == "ctrl-c" else -signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert [k for k in kids if _alive(k)] == []
    assert b"Traceback" not in err
