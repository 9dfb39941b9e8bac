"""The sbatch templates in tools/slurm/ parse and run.

No Slurm here, so a stand-in ``srun`` on PATH starts the job the way ``srun --mpi=pmix``
does on one node: Open MPI's ``mpirun`` (a PMIx launcher). A stand-in ``apptainer exec``
applies ``--env`` and runs the command on this machine. The real CLIs run, in smoke mode
(``PARALLEL_RL_SMOKE=1``), and their outputs are checked.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "tools" / "slurm"
RECIPES = sorted(SLURM.glob("*.sbatch"))
VENV = Path(sys.prefix)

# The sbatch options these templates may use (sbatch(1) long names).
KNOWN_SBATCH = {
    "job-name", "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "time", "output",
    "error", "gres", "gpus", "gpus-per-node", "mem", "partition", "account", "exclusive",
}

FAKE_SRUN = r"""#!/usr/bin/env bash
# Stand-in for srun on one node: drop srun's options; --mpi=pmix starts SLURM_NTASKS ranks
# with Open MPI's mpirun (PMIx, as srun --mpi=pmix); without --mpi, one task.
set -euo pipefail
mpi=
while [ $# -gt 0 ]; do
    case "$1" in
        --mpi=*) mpi="${1#--mpi=}"; shift ;;
        --*=*|--exclusive) shift ;;
        -n|-N|-c|--ntasks|--nodes|--cpus-per-task) shift 2 ;;
        -*) echo "fake srun: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
command -v "$1" >/dev/null || { echo "fake srun: $1: command not found" >&2; exit 127; }
case "$mpi" in
    pmix) exec "$OMPI_MPIRUN" -n "${SLURM_NTASKS:-2}" "$@" ;;
    "") exec "$@" ;;
    *) echo "fake srun: --mpi=$mpi not simulated" >&2; exit 2 ;;
esac
"""

FAKE_APPTAINER = r"""#!/usr/bin/env bash
# Stand-in for `apptainer exec [--bind SRC[:DST]] [--env K=V] [--nv] IMAGE CMD...`.
set -euo pipefail
[ "$1" = exec ] || { echo "fake apptainer: only exec" >&2; exit 2; }
shift
while [ $# -gt 0 ]; do
    case "$1" in
        --bind|-B) src="${2%%:*}"; [ -e "$src" ] || { echo "fake apptainer: bind source $src missing" >&2; exit 255; }; shift 2 ;;
        --env) export "$2"; shift 2 ;;
        --nv|--cleanenv) shift ;;
        -*) echo "fake apptainer: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ -f "$1" ] || { echo "fake apptainer: image $1 not found" >&2; exit 255; }
shift
command -v "$1" >/dev/null || { echo "fake apptainer: $1: command not found" >&2; exit 127; }
exec "$@"
"""


def open_mpi_mpirun() -> str | None:
    ompi_info = shutil.which("ompi_info")
    if ompi_info is None:
        return None
    mpirun = Path(ompi_info).resolve().parent / "mpirun"
    return str(mpirun) if mpirun.exists() else None


MPIRUN = open_mpi_mpirun()


def test_there_are_recipes_for_each_workload():
    assert {p.name for p in RECIPES} >= {
        "empo-prior.sbatch", "empo-prior-apptainer.sbatch", "cogames-mpi.sbatch", "esper-2gpu.sbatch",
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_uses_known_sbatch_options(recipe):
    result = subprocess.run(["bash", "-n", str(recipe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = recipe.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    options = re.findall(r"^#SBATCH\s+--([a-z-]+)", text, flags=re.M)
    assert options and set(options) <= KNOWN_SBATCH, set(options) - KNOWN_SBATCH
    # Every console script a recipe starts exists in the environment.
    scripts = re.findall(r"\$VENV/bin/([\w-]+)", text) + re.findall(r'"\$IMAGE"\s*\\\n\s*([\w-]+)', text)
    assert scripts
    for script in scripts:
        assert (VENV / "bin" / script).exists(), script
    if "--mpi=" in text:
        assert "srun --mpi=pmix" in text


@pytest.fixture
def fake_cluster(tmp_path):
    """A folder with the stand-ins, the environment a job would see, and a clean work dir."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, body in (("srun", FAKE_SRUN), ("apptainer", FAKE_APPTAINER)):
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    work = tmp_path / "job"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL", "MPI4PY_", "PARALLEL_CORE_", "SLURM_"))
    }
    env.update(
        PATH=f"{bindir}:{VENV / 'bin'}:{env.get('PATH', '')}",
        PARALLEL_RL_DIR=str(work),
        PARALLEL_RL_VENV=str(VENV),
        PARALLEL_RL_SMOKE="1",
        MPI_MODULE="",
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        SLURM_CPUS_PER_TASK="1",
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    if MPIRUN:
        env["OMPI_MPIRUN"] = MPIRUN
    return work, env


def sbatch(recipe: str, env: dict, *args: str, **extra) -> subprocess.CompletedProcess:
    """Run a template as Slurm would (``sbatch recipe args...``), with the stand-ins on PATH."""
    return subprocess.run(
        ["bash", str(SLURM / recipe), *args], env={**env, **extra}, capture_output=True, text=True, timeout=300
    )


needs_open_mpi = pytest.mark.skipif(MPIRUN is None, reason="Open MPI not installed (CI installs openmpi-bin)")


@needs_open_mpi
def test_empo_recipe_runs_two_pmix_ranks(fake_cluster):
    work, env = fake_cluster
    r = sbatch("empo-prior.sbatch", env, WORLD="medium")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["ranks"] == 2
    with np.load(work / "prior-medium.npz") as z:
        assert z["policy"].size > 0
    assert sorted(p.name for p in work.iterdir()) == ["prior-medium.npz"]


@needs_open_mpi
def test_empo_apptainer_recipe_binds_the_host_mpi(fake_cluster):
    from parallel_core.sitempi import find_openmpi_libmpi

    work, env = fake_cluster
    (work / "parallel-rl.sif").write_bytes(b"image")
    libdir = find_openmpi_libmpi(os.environ).parent
    r = sbatch("empo-prior-apptainer.sbatch", env, WORLD="small", MPI_LIBDIR=str(libdir))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{"):])["ranks"] == 2
    assert (work / "prior-small.npz").exists()
    # A missing image is the container runtime's error, and the job fails.
    (work / "parallel-rl.sif").unlink()
    r = sbatch("empo-prior-apptainer.sbatch", env, WORLD="small", MPI_LIBDIR=str(libdir))
    assert r.returncode != 0 and "image parallel-rl.sif not found" in r.stderr


@needs_open_mpi
def test_cogames_recipe_runs_the_mpi_backend(fake_cluster):
    work, env = fake_cluster
    r = sbatch("cogames-mpi.sbatch", env, MISSIONS="harvest.open", EPISODES="2")
    assert r.returncode == 0, r.stderr
    data = json.loads((work / "cogames-4242.json").read_text())
    assert data  # rank 0 wrote the evaluation


def test_esper_recipe_runs_and_fails_clearly_without_gpus(fake_cluster):
    work, env = fake_cluster
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        gpus = 0
    if gpus < 2:  # the default devices cuda:0 cuda:1: one clear line, exit 2, before any work
        r = sbatch("esper-2gpu.sbatch", env)
        assert r.returncode == 2, r.stderr
        assert re.search(r"esper: error: requested cuda:\d .*use --devices cpu", r.stderr), r.stderr
        assert not (work / "esper-4242.pt").exists()
    # The recipe's command line runs (on a CPU device, the smallest job; arguments are passed on).
    r = sbatch(
        "esper-2gpu.sbatch", env, "--task", "synthetic", "--max-epochs", "2", "--quiet",
        DEVICES="cpu", N_ENVS="1", AMP="off", EPISODES="1",
    )
    assert r.returncode == 0, r.stderr
    assert (work / "esper-4242.pt").exists()
