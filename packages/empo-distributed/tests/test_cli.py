"""``empo-prior`` as a user runs it: exit codes, messages, output file, progress."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from empo_distributed import load_prior

HERE = Path(__file__).resolve().parent
WORLDS = HERE / "empo_test_worlds.py"


def run(*args, cwd=None):
    env = dict(os.environ, PARALLEL_CORE_MPI="0")
    return subprocess.run(
        [sys.executable, "-m", "empo_distributed.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_no_arguments_runs_small_default_job():
    r = run("--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["world"] == "small" and summary["states"] == 642 and summary["levels"] == 7
    assert abs(sum(summary["root_marginal"]) - 1) < 1e-6
    assert r.stderr == ""


def test_help_shows_example():
    r = run("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "mpirun -n 4 empo-prior" in r.stdout


def test_list_worlds():
    r = run("--list-worlds", "--quiet")
    names = [w["name"] for w in json.loads(r.stdout)]
    assert {"tiny", "small", "large", "huge", "two_humans"} <= set(names)


def test_output_roundtrip_and_progress(tmp_path):
    out = tmp_path / "prior.npz"
    r = run("--world", "contest", "--beta-h", "10", "--gamma-h", "0.9", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "DAG waves" in r.stderr and "Phase 1 levels" in r.stderr
    assert "states," in r.stderr and "1 rank(s) x 1 worker(s)" in r.stderr
    prior = load_prior(out)
    summary = json.loads(r.stdout)
    assert len(prior) == summary["states"]
    root = prior.states[0]
    np.testing.assert_allclose(prior(root, 0), summary["root_marginal"], atol=1e-6)
    assert prior.meta["gamma_h"] == pytest.approx(0.9) and prior.meta["world"] == "contest"
    assert prior(root, 0, int(prior.goal_ids[0])).shape == (5,)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--world", "no-such-world"], 2, "unknown world 'no-such-world'"),
        (["--world", f"{WORLDS}:make_cyclic"], 2, "the world is cyclic"),
        (["--world", f"{WORLDS}:make_bad_prob"], 2, "sum to 0.8"),
        (["--gamma-h", "1.5"], 2, "must be in (0, 1]"),
        (["--gamma-h", "0.9", "--rho-h", "0.1"], 2, "not allowed with argument"),
        (["--bogus"], 2, "unrecognized arguments"),
        (["--max-steps", "0"], 2, "must be >= 1"),
    ],
)
def test_errors_one_line_exit_2(args, code, message, tmp_path):
    out = tmp_path / "prior.npz"
    out.write_bytes(b"previous result")
    r = run(*args, "--output", str(out))
    assert r.returncode == code
    assert message in r.stderr
    lines = r.stderr.strip().splitlines()  # progress bars may precede the one error line
    assert lines[-1].startswith("empo-prior: error: ") and sum("error" in x for x in lines) == 1
    assert out.read_bytes() == b"previous result"  # a finished file stays intact


def test_bad_map_file(tmp_path):
    bad = tmp_path / "bad.map"
    bad.write_text("#####\n#H.?#\n#####\n")
    r = run("--world", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "empo-prior: error: bad.map: line 2: unexpected character(s) '?'; grid lines use only "
        "'#' wall, '.' floor, 'H' human, 'R' robot, 'G' goal cell"
    )


def test_workers_flag_gives_identical_file(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert (
        run("--world", "medium", "--max-steps", "5", "--output", str(a), "--quiet").returncode == 0
    )
    r = run(
        "--world", "medium", "--max-steps", "5", "--workers", "2", "--output", str(b), "--quiet"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["workers_per_rank"] == 2
    za, zb = np.load(a), np.load(b)
    for key in ("states", "terminal", "policy", "values", "goal_ids"):
        np.testing.assert_array_equal(za[key], zb[key])


def test_output_directory_is_rejected_before_the_run(tmp_path):
    r = run("--world", "tiny", "--output", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"empo-prior: error: --output {tmp_path} is a directory; give a file name such as "
        f"{tmp_path / 'prior.npz'}"
    ]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("--world", "tiny", "--output", str(blocker / "prior.npz"), "--quiet")
    assert r.returncode == 2 and r.stderr.startswith("empo-prior: error: --output ")
    assert "Traceback" not in r.stderr and blocker.read_text() == "x"


def test_world_factory_that_raises_is_one_line_exit_2(tmp_path):
    factory = tmp_path / "myworld.py"
    factory.write_text("def make():\n    raise RuntimeError('no such level')\n")
    r = run("--world", f"{factory}:make", "--quiet")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"empo-prior: error: world factory '{factory}:make' failed: RuntimeError: no such level"
    )


def test_ctrl_c_is_one_line_exit_130(tmp_path):
    out = tmp_path / "prior.npz"
    r = run("--world", f"{WORLDS}:make_interrupted", "--quiet", "--output", str(out))
    assert r.returncode == 130
    assert r.stderr.strip() == "empo-prior: interrupted; worker processes stopped"
    assert not out.exists() and not list(tmp_path.iterdir())


def test_max_steps_for_a_factory_without_it_is_an_error_not_ignored():
    r = run("--world", f"{WORLDS}:make_bad_prob", "--max-steps", "3", "--quiet")
    assert r.returncode == 2
    assert "takes no max_steps argument" in r.stderr and "Traceback" not in r.stderr


SIGTERM_DURING_PHASE1 = """
import os, signal, sys
from empo_distributed import cli, phase1

phase1._LocalRunner.MIN_PARALLEL_WORK = 1  # start the worker pool and /dev/shm arrays at once
phase1._LocalRunner.MIN_CHUNK = 1
run = phase1._LocalRunner.run

def run_then_terminated(self, idx, *args):
    run(self, idx, *args)
    if self.shared is not None:
        print(self.shared.dir, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

phase1._LocalRunner.run = run_then_terminated
sys.argv[1:] = ["--world", "tiny", "--workers", "2", "--quiet", "--output", sys.argv[1]]
sys.exit(cli.main())
"""


def test_sigterm_during_phase1_removes_shared_files(tmp_path):
    out = tmp_path / "prior.npz"
    r = subprocess.run(
        [sys.executable, "-c", SIGTERM_DURING_PHASE1, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PARALLEL_CORE_MPI="0"),
    )
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip() == "empo-prior: terminated; worker processes stopped"
    shared_dir = r.stdout.split()[0]
    assert not os.path.exists(shared_dir)  # no leftover shared-memory files
    assert not out.exists() and not list(tmp_path.iterdir())


SIGTERM_TO_GROUP_WHILE_WORKERS_START = """
import os, signal, sys, time
from empo_distributed import cli, phase1

phase1._LocalRunner.MIN_PARALLEL_WORK = 1
phase1._LocalRunner.MIN_CHUNK = 1
init = phase1._init_kernel_worker

def init_then_terminate_everyone(*args):
    # Like SLURM or `kill -TERM -PGID`: the signal reaches the parent and every worker,
    # some of them still starting.
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: print's two may interleave with another worker's
    os.killpg(0, signal.SIGTERM)
    init(*args)

phase1._init_kernel_worker = init_then_terminate_everyone
sys.argv[1:] = ["--world", "tiny", "--workers", "2", "--quiet", "--output", sys.argv[1]]
sys.exit(cli.main())
"""


def test_sigterm_to_the_whole_group_while_workers_start(tmp_path):
    """Issue 12 item 6: workers ignore SIGTERM; the parent reports once and cleans up."""
    out = tmp_path / "prior.npz"
    before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_TO_GROUP_WHILE_WORKERS_START, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PARALLEL_CORE_MPI="0"),
        start_new_session=True,  # its own process group: the signal stays inside it
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip() == "empo-prior: terminated; worker processes stopped"
    assert "Traceback" not in stderr and "initializer" not in stderr
    worker_pids = [int(x) for x in stdout.split()]
    assert worker_pids
    for pid in worker_pids:  # no worker outlives the run
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                os.kill(pid, 0)
                import time

                time.sleep(0.1)
    after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert not {n for n in after - before if n.startswith("empo-")}
    assert not out.exists() and not list(tmp_path.iterdir())


def test_output_never_replaces_a_device_or_fifo(tmp_path):
    """Issue 12 item 5: as root, --output /dev/null used to replace the device."""
    r = run("--world", "tiny", "--output", "/dev/null", "--quiet")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "empo-prior: error: --output /dev/null exists and is not a regular file (a device, "
        "pipe or socket); it is never replaced: give a file name"
    )
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    r = run("--world", "tiny", "--output", str(fifo), "--quiet")
    assert r.returncode == 2 and "is not a regular file" in r.stderr
    assert not os.path.isfile(fifo) and os.path.exists(fifo)


def test_max_memory_stops_cleanly_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "prior.npz"
    out.write_bytes(b"previous result")
    r = run("--world", "medium", "--max-memory", "1M", "--output", str(out), "--quiet")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("empo-prior: error: stopped after DAG wave 1")
    assert "would exceed the limit 1.0 MB (--max-memory)" in lines[0]
    assert out.read_bytes() == b"previous result"
    r = run("--max-memory", "lots")
    assert r.returncode == 2 and "expected a size such as 8G or 500M" in r.stderr


def test_smoke_mode_shrinks_big_worlds():
    env_run = subprocess.run(
        [sys.executable, "-m", "empo_distributed.cli", "--world", "huge", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PARALLEL_CORE_MPI="0", PARALLEL_RL_SMOKE="1"),
    )
    assert env_run.returncode == 0, env_run.stderr
    summary = json.loads(env_run.stdout)
    assert summary["smoke"] is True and summary["states"] <= 5000 and summary["levels"] == 5


def test_output_records_the_mode(tmp_path):
    out = tmp_path / "prior.npz"
    r = run("--world", "tiny", "--workers", "2", "--output", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert load_prior(out).meta["mode"] == "2 workers"


def test_output_works_for_a_world_without_a_map_spec(tmp_path):
    """Issue 12 item 1: a gymnasium env (``spec`` None) crashed after the whole run."""
    out = tmp_path / "prior.npz"
    r = run("--world", f"{WORLDS}:make_gym_like", "--gamma-h", "0.9", "--output", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    prior = load_prior(out)
    assert prior.meta["map"] is None and prior.meta["world_name"].endswith("make_gym_like")
    assert json.loads(r.stdout)["humans"] == [0, 1] and len(prior) == json.loads(r.stdout)["states"]
