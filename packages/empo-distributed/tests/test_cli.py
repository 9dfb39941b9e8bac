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
