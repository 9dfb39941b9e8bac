"""empo-prior end to end, as users run it: console script, --workers, mpirun, simulated nodes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EMPO = str(BIN / "empo-prior")
MPIRUN = str(BIN / "mpirun")
TEST_WORLDS = ROOT / "packages" / "empo-distributed" / "tests" / "empo_test_worlds.py"
ARGS = ["--world", "medium", "--max-steps", "5", "--beta-h", "10", "--gamma-h", "0.9", "--quiet"]


def run(cmd, **kw):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PARALLEL_CORE_"))
    }
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, **kw)


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in ("states", "terminal", "policy", "values", "goal_ids")}


@pytest.fixture(scope="module")
def serial_prior(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "prior.npz"
    r = run([EMPO, *ARGS, "--output", str(out)])
    assert r.returncode == 0, r.stderr
    return load(out), json.loads(r.stdout)


@pytest.mark.parametrize("mode", ["workers", "mpirun", "simulate", "mpirun+workers"])
def test_all_modes_write_identical_priors(mode, serial_prior, tmp_path):
    out = tmp_path / "prior.npz"
    cmd = {
        "workers": [EMPO, *ARGS, "--workers", "2"],
        "mpirun": [MPIRUN, "-n", "2", EMPO, *ARGS],
        "simulate": [EMPO, *ARGS, "--mpi-simulate-nodes", "2"],
        "mpirun+workers": [MPIRUN, "-n", "2", EMPO, *ARGS, "--workers", "2"],
    }[mode]
    r = run([*cmd, "--output", str(out)])
    assert r.returncode == 0, r.stderr
    summaries = [json.loads(x) for x in _json_blocks(r.stdout)]
    assert len(summaries) == 1  # only rank 0 reports (and writes)
    expected_ranks = 1 if mode == "workers" else 2
    assert summaries[0]["ranks"] == expected_ranks
    assert summaries[0]["states"] == serial_prior[1]["states"]
    got, want = load(out), serial_prior[0]
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{mode}: {key} differs")
    assert [p.name for p in tmp_path.iterdir()] == ["prior.npz"]  # no temp file left


def _json_blocks(text):
    blocks, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
            start = i if depth == 1 else start
        elif ch == "}":
            depth -= 1
            if depth == 0:
                blocks.append(text[start : i + 1])
    return blocks


def test_load_prior_answers_queries(serial_prior, tmp_path):
    out = tmp_path / "p.npz"
    assert run([EMPO, "--world", "tiny", "--output", str(out), "--quiet"]).returncode == 0
    code = (
        "from empo_distributed import load_prior, load_world\n"
        f"p = load_prior({str(out)!r}); w = load_world('tiny')\n"
        "root = w.reset(); m = p(root, 0); g = p(root, 0, int(p.goal_ids[0]))\n"
        "print(round(float(m.sum()), 9), round(float(g.sum()), 9), int(m.argmax()))\n"
    )
    r = run([sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1.0", "1.0", "4"]  # 'right' leads to the goal cell


def test_mpi_usage_error_exits_2_on_every_rank():
    r = run([MPIRUN, "-n", "2", EMPO, "--world", f"{TEST_WORLDS}:make_bad_prob", "--quiet"])
    assert r.returncode == 2
    assert r.stderr.count("sum to 0.8") == 1  # reported once, by rank 0


def test_dying_rank_stops_the_whole_job():
    r = run([MPIRUN, "-n", "2", EMPO, "--world", f"{TEST_WORLDS}:make_dying", "--quiet"])
    assert r.returncode != 0  # never a hang: timeout=180 in run()


def test_bad_world_file_exit_2(tmp_path):
    bad = tmp_path / "broken.map"
    bad.write_text("max_steps = 3\n####\n#H.#\n###\n")
    r = run([EMPO, "--world", str(bad)])
    assert r.returncode == 2
    assert r.stderr.strip().endswith(
        "grid rows have different lengths; pad every row to the same width"
    )
