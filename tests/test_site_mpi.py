"""The mission's command with a site MPI: ``mpirun -n 2 uv run empo-prior`` under Open MPI.

Open MPI's launcher speaks PMIx; the bundled MPICH wheel cannot join it (every rank aborted
with "Runtime environment uses unsupported PMI version PMIx"). parallel-core now loads the
site's ``libmpi.so.40`` itself. CI installs Debian's ``openmpi-bin`` (.ci/run); elsewhere
these tests skip when Open MPI is absent.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = ["--world", "medium", "--max-steps", "5", "--beta-h", "10", "--gamma-h", "0.9", "--quiet"]


def open_mpi_mpirun() -> str | None:
    """Open MPI's own mpirun (beside ompi_info), never the bundled MPICH one."""
    ompi_info = shutil.which("ompi_info")
    if ompi_info is None:
        return None
    mpirun = Path(ompi_info).resolve().parent / "mpirun"
    return str(mpirun) if mpirun.exists() else None


MPIRUN = open_mpi_mpirun()
needs_open_mpi = pytest.mark.skipif(MPIRUN is None, reason="Open MPI not installed (CI installs openmpi-bin)")


def env(**extra) -> dict:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL", "MPI4PY_", "PARALLEL_CORE_"))
    }
    clean.update(
        # CI runs as root; Open MPI refuses that unless told, and 2 ranks may exceed 2 cores' slots.
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
        UV_FROZEN="1",  # uv run must not rewrite uv.lock from a test
    )
    clean.update(extra)
    return clean


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=kw.pop("cwd", ROOT), **kw)


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in ("states", "terminal", "policy", "values", "goal_ids")}


def summary(stdout: str) -> dict:
    """The one JSON summary rank 0 prints."""
    start = stdout.index("{")
    return json.loads(stdout[start:])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "prior.npz"
    r = run([str(BIN / "empo-prior"), *ARGS, "--output", str(out)], env=env())
    assert r.returncode == 0, r.stderr
    return load(out)


@needs_open_mpi
def test_open_mpi_mpirun_runs_empo_prior_with_two_real_ranks(serial, tmp_path):
    out = tmp_path / "prior.npz"
    r = run([MPIRUN, "-n", "2", str(BIN / "empo-prior"), *ARGS, "--output", str(out)], env=env())
    assert r.returncode == 0, r.stderr
    assert "unsupported PMI version" not in r.stderr
    assert summary(r.stdout)["ranks"] == 2
    got = load(out)
    for key, want in serial.items():
        np.testing.assert_array_equal(got[key], want, err_msg=f"{key} differs from the serial run")


@needs_open_mpi
@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not on PATH")
def test_the_mission_command_as_typed(serial, tmp_path):
    """``mpirun -n 2 uv run empo-prior``: Open MPI's mpirun, uv run inside every rank."""
    out = tmp_path / "prior.npz"
    r = run([MPIRUN, "-n", "2", "uv", "run", "empo-prior", *ARGS, "--output", str(out)], env=env())
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout)["ranks"] == 2
    got = load(out)
    for key, want in serial.items():
        np.testing.assert_array_equal(got[key], want, err_msg=f"{key} differs from the serial run")


@pytest.mark.skipif(MPIRUN is None, reason="needs Open MPI's libmpi.so.40")
def test_a_library_that_does_not_match_the_launcher_is_one_clear_error(tmp_path):
    """Forcing Open MPI's library under MPICH's mpiexec used to run 2 serial copies silently."""
    from parallel_core.sitempi import find_openmpi_libmpi

    libmpi = find_openmpi_libmpi(os.environ)
    assert libmpi is not None
    code = "from parallel_core.cli import run_cli\nfrom parallel_core.mpi import get_context\n" \
        "raise SystemExit(run_cli('probe', lambda: print(get_context())))"
    r = run(
        [str(BIN / "mpiexec"), "-n", "2", sys.executable, "-c", code],
        env=env(MPI4PY_LIBMPI=str(libmpi), MPI4PY_MPIABI="openmpi"),
        cwd=tmp_path,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("probe: error:")]
    assert len(lines) == 2  # one line per rank, no traceback
    assert "the launcher started 2 ranks but the loaded MPI library sees 1" in lines[0]
    assert "Traceback" not in r.stderr
    assert "Context(" not in r.stdout
