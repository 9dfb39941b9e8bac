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


def test_load_prior_answers_queries(tmp_path):
    """The file the console script writes answers queries through the Python API (read
    here, in the test process: a second interpreter would only add its start-up)."""
    from empo_distributed import load_prior, load_world

    out = tmp_path / "p.npz"
    assert run([EMPO, "--world", "tiny", "--output", str(out), "--quiet"]).returncode == 0
    p, root = load_prior(out), load_world("tiny").reset()
    m, g = p(root, 0), p(root, 0, int(p.goal_ids[0]))
    assert abs(float(m.sum()) - 1.0) < 1e-9 and abs(float(g.sum()) - 1.0) < 1e-9
    assert int(m.argmax()) == 4  # 'right' leads to the goal cell


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


# --- an unchanged upstream EMPO MultiGrid env through the CLI (issue 12 item 1) ----------
UPSTREAM = os.environ.get("EMPO_UPSTREAM")  # a checkout of github.com/mensch72/empo
UPSTREAM_PYTHON = os.environ.get("EMPO_UPSTREAM_PYTHON")  # has upstream's deps + this package
MULTIGRID = ROOT / "packages" / "empo-distributed" / "examples" / "upstream_multigrid.py"


@pytest.mark.skipif(
    not (UPSTREAM and UPSTREAM_PYTHON),
    reason="needs EMPO_UPSTREAM (an upstream EMPO checkout) and EMPO_UPSTREAM_PYTHON (a python "
    "with gymnasium, matplotlib, cloudpickle, tqdm, psutil, pyyaml and this package)",
)
def test_unchanged_upstream_multigrid_env_matches_upstream(tmp_path):
    """Reference: upstream EMPO commit 9e4ba2ce6a49aa5ad59de139804b3a52c6425798,
    ``compute_human_policy_prior(env, env.human_agent_indices, env.possible_goal_generator,
    beta_h=10, gamma_h=0.9, optimistic=True, use_float16=False, use_attainment_cache=False,
    return_Vh=True)`` on ``MultiGridEnv(config_file="multigrid_worlds/trivial.yaml",
    max_steps=4)``: 156 states; at the root, human 1's marginal and the policy and V of the
    first goal (V stored by upstream in float16, hence the tolerances)."""
    out = tmp_path / "prior.npz"
    env = dict(os.environ, EMPO_UPSTREAM=UPSTREAM, PARALLEL_CORE_MPI="0")
    r = subprocess.run(
        [UPSTREAM_PYTHON, "-m", "empo_distributed.cli", "--world", f"{MULTIGRID}:make",
         "--max-steps", "4", "--gamma-h", "0.9", "--optimistic", "--quiet", "--output", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["states"] == 156 and summary["humans"] == [1]
    np.testing.assert_allclose(
        summary["root_marginal"], [0.3766086274, 0.214544667, 0.1989047448, 0.2099419608], atol=2e-4
    )
    code = (
        "import sys; from empo_distributed import load_prior\n"
        f"p = load_prior({str(out)!r}, allow_pickle=True)\n"
        "print(*p(p.states[0], 1, int(p.goal_ids[0])), p.values[0, 0])\n"
    )
    r = subprocess.run([UPSTREAM_PYTHON, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    got = [float(x) for x in r.stdout.split()]
    np.testing.assert_allclose(got[:4], [0.2596517646, 0.2872680021, 0.1934284686, 0.2596517646], atol=2e-4)
    assert abs(got[4] - 0.75537109375) < 1e-3


def test_simulate_nodes_from_the_environment():
    """PARALLEL_CORE_SIMULATE_NODES=2 runs the job as 2 MPI ranks, as the docs say."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PARALLEL_CORE_"))}
    env["PARALLEL_CORE_SIMULATE_NODES"] = "2"
    r = subprocess.run(
        [EMPO, "--world", "tiny", "--quiet"], capture_output=True, text=True, timeout=180, env=env
    )
    assert r.returncode == 0, r.stderr
    summaries = [json.loads(x) for x in _json_blocks(r.stdout)]
    assert len(summaries) == 1 and summaries[0]["ranks"] == 2 and summaries[0]["states"] == 95


def test_bench_reports_the_machines_ceiling(tmp_path):
    """`bench_empo.py` also runs 2 serial solves side by side each round: the machine's
    2-way ceiling (2 x one alone / the slower of the two), and the MPI mode against it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_empo", ROOT / "tools" / "bench_empo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # medians: one alone 2.0 s, two side by side 2.5 s -> 2 x 2.0 / 2.5
    c = bench.ceiling([2.2, 2.0, 1.8], [2.4, 2.5, 3.0], copies=2)
    assert c == {"copies": 2, "side_by_side_total_s": 2.5, "speedup": pytest.approx(1.6)}

    out = tmp_path / "b.json"
    r = run([sys.executable, str(ROOT / "tools" / "bench_empo.py"), "--quick", "--simulated-ranks", "0",
             "--reference-sizes", "", "--output", str(out)])
    assert r.returncode == 0, r.stderr
    e = json.loads(out.read_text())["sizes"]["1e3"]
    m = e["machine_ceiling"]
    assert m["copies"] == 2 and len(m["side_by_side_total_s_all"]) == 1
    assert m["speedup"] == pytest.approx(2 * e["runs"]["serial"]["total_s"] / m["side_by_side_total_s"])
    assert m["mpi_share_of_ceiling"] == pytest.approx(e["runs"]["mpi x2"]["speedup_total"] / m["speedup"])
    assert "2-way ceiling now is" in r.stderr


KILLED_IN_PHASE1 = """
import os, signal, sys
from empo_distributed import cli, node_shared, phase1

create, compute = node_shared.NodeArray.create, phase1.LevelKernel.compute

def create_and_tell(comm, *args):
    node = create(comm, *args)
    if comm.Get_rank() == 0 and node is not None:
        os.write(1, (node.path + "\\n").encode())
    return node

def compute_then_die(self, idx, between=None):
    from mpi4py import MPI

    compute(self, idx, between)
    if MPI.COMM_WORLD.Get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs

node_shared.NodeArray.create = create_and_tell
phase1.LevelKernel.compute = compute_then_die
sys.argv[1:] = ["--world", "tiny", "--quiet", "--output", sys.argv[1]]
sys.exit(cli.main())
"""


def test_rank_killed_in_phase1_leaves_no_node_shared_file(tmp_path):
    """Ranks on one node share the policies through a /dev/shm file whose name is removed
    as soon as every rank has mapped it: a rank killed outright (SIGKILL) in Phase 1
    stops the job and leaves nothing behind."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    out = tmp_path / "prior.npz"
    r = run([MPIRUN, "-n", "2", sys.executable, "-c", KILLED_IN_PHASE1, str(out)])
    assert r.returncode != 0
    paths = [p for p in r.stdout.split() if p.startswith("/dev/shm/empo-node-")]
    assert len(paths) == 1, r.stdout  # rank 0's node shared the policies
    assert not any(os.path.exists(p) for p in paths)
    assert not out.exists()
