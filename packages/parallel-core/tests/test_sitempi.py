"""Choosing the MPI library that matches the launcher (parallel_core.sitempi).

The decisions are tested on made-up environments and library folders; the real launches
(Open MPI's mpirun, a uv-overlay-like environment under the bundled mpiexec) run at the end.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from parallel_core import sitempi
from parallel_core.cli import CliError
from parallel_core.sitempi import (
    SiteMPIError,
    bundled_bindir,
    bundled_libmpi,
    check_world_size,
    choose_libmpi,
    launcher_kind,
)

OMPI = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "PMIX_RANK": "0"}
PMIX = {"PMIX_RANK": "1", "SLURM_PROCID": "1"}
HYDRA = {"PMI_RANK": "0", "PMI_SIZE": "2", "PMI_FD": "9"}


def fake_lib(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"\x7fELF not really")
    return path


@pytest.fixture
def no_system_mpi(monkeypatch):
    """Hide the machine's own MPI installs (ldconfig cache, tools on PATH)."""
    monkeypatch.setattr(sitempi, "_ldconfig_paths", lambda name: [])


def test_launcher_kind_from_the_variables_launchers_set():
    assert launcher_kind(OMPI) == "openmpi"
    assert launcher_kind(PMIX) == "pmix"
    assert launcher_kind(HYDRA) == "pmi"
    assert launcher_kind({"PMI_PORT": "host:1234"}) == "pmi"
    assert launcher_kind({"PATH": "/usr/bin"}) is None


def test_no_launcher_keeps_mpi4py_default():
    choice = choose_libmpi({"PATH": "/usr/bin"})
    assert (choice.launcher, choice.libmpi, choice.abi) == (None, None, None)


def test_user_settings_always_win(tmp_path):
    env = {**OMPI, "MPI4PY_LIBMPI": "/opt/x/libmpi.so.40", "MPI4PY_MPIABI": "openmpi"}
    choice = choose_libmpi(env)
    assert (choice.libmpi, choice.abi, choice.reason) == ("/opt/x/libmpi.so.40", "openmpi", "set by the user")


def test_open_mpi_launcher_takes_the_library_on_ld_library_path(tmp_path, no_system_mpi):
    lib = fake_lib(tmp_path / "openmpi" / "lib", "libmpi.so.40")
    env = {**OMPI, "PATH": "", "LD_LIBRARY_PATH": f"/nowhere:{lib.parent}"}
    choice = choose_libmpi(env)
    assert (choice.launcher, choice.libmpi, choice.abi) == ("openmpi", str(lib), "openmpi")


def test_open_mpi_launcher_finds_the_library_from_its_tools_prefix(tmp_path, no_system_mpi):
    prefix = tmp_path / "opt" / "openmpi-4.1"
    lib = fake_lib(prefix / "lib64", "libmpi.so.40")
    (prefix / "bin").mkdir()
    tool = prefix / "bin" / "ompi_info"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    choice = choose_libmpi({**OMPI, "PATH": str(prefix / "bin")})
    assert (choice.libmpi, choice.abi) == (str(lib), "openmpi")
    # OPAL_PREFIX (Open MPI's relocation variable) is enough on its own.
    choice = choose_libmpi({**OMPI, "PATH": "", "OPAL_PREFIX": str(prefix)})
    assert choice.libmpi == str(lib)


def test_open_mpi_launcher_uses_the_linker_cache(tmp_path, monkeypatch):
    lib = fake_lib(tmp_path / "usr" / "lib", "libmpi.so.40")
    monkeypatch.setattr(sitempi, "_ldconfig_paths", lambda name: [lib] if name == "libmpi.so.40" else [])
    assert choose_libmpi({**OMPI, "PATH": ""}).libmpi == str(lib)


def test_open_mpi_launcher_without_its_library_says_what_to_set(no_system_mpi):
    with pytest.raises(SiteMPIError) as info:
        choose_libmpi({**OMPI, "PATH": ""})
    message = str(info.value)
    assert "\n" not in message
    assert "Open MPI's launcher" in message
    assert "MPI4PY_LIBMPI=/path/to/your/libmpi.so.40 MPI4PY_MPIABI=openmpi" in message
    assert "uv run mpirun -n N" in message
    assert isinstance(info.value, CliError)  # run_cli prints it as one line, exit 1
    with pytest.raises(SiteMPIError, match="PMIx launcher"):
        choose_libmpi({**PMIX, "PATH": ""})


def test_pmix_launcher_accepts_a_site_mpich_abi_library(tmp_path, no_system_mpi):
    lib = fake_lib(tmp_path / "cray-mpich" / "lib", "libmpi_cray.so.12")
    choice = choose_libmpi({**PMIX, "PATH": "", "LD_LIBRARY_PATH": str(lib.parent)})
    assert (choice.launcher, choice.libmpi, choice.abi) == ("pmix", str(lib), "mpich")


def test_pmix_launcher_never_picks_the_bundled_mpich(tmp_path, no_system_mpi):
    bundled = bundled_libmpi()
    if bundled is None:
        pytest.skip("the mpich wheel is not installed here")
    with pytest.raises(SiteMPIError):
        choose_libmpi({**PMIX, "PATH": "", "LD_LIBRARY_PATH": str(bundled.parent)})


def test_hydra_in_the_wheels_own_environment_keeps_the_default():
    if bundled_libmpi() is None or bundled_libmpi().parent != Path(sys.exec_prefix).resolve() / "lib":
        pytest.skip("this interpreter is not the one the mpich wheel was installed for")
    choice = choose_libmpi(HYDRA)
    assert (choice.launcher, choice.libmpi) == ("pmi", None)


def test_hydra_in_an_overlay_environment_points_at_the_bundled_mpich(tmp_path, monkeypatch):
    bundled = bundled_libmpi()
    if bundled is None:
        pytest.skip("the mpich wheel is not installed here")
    monkeypatch.setattr(sys, "exec_prefix", str(tmp_path / "overlay"))
    choice = choose_libmpi({**HYDRA, "LD_LIBRARY_PATH": ""})
    assert (choice.libmpi, choice.abi) == (str(bundled), "mpich")



def test_hydra_prefers_a_site_mpich_abi_library_on_ld_library_path(tmp_path):
    """module load mpich / cray-mpich: the site library (fast interconnect) beats the wheel's."""
    site = fake_lib(tmp_path / "site" / "lib", "libmpi.so.12")
    choice = choose_libmpi({**HYDRA, "LD_LIBRARY_PATH": f"/nowhere:{site.parent}"})
    assert (choice.libmpi, choice.abi) == (str(site), "mpich")
    # An Open MPI folder's unversioned libmpi.so (a link to libmpi.so.40) cannot join Hydra.
    ompi = fake_lib(tmp_path / "ompi" / "lib", "libmpi.so.40")
    (ompi.parent / "libmpi.so").symlink_to("libmpi.so.40")
    choice = choose_libmpi({**HYDRA, "LD_LIBRARY_PATH": f"{ompi.parent}:{site.parent}"})
    assert choice.libmpi == str(site)
    bundled = bundled_libmpi()
    if bundled is not None:  # the wheel's own folder on LD_LIBRARY_PATH is not a site MPI
        choice = choose_libmpi({**HYDRA, "LD_LIBRARY_PATH": str(bundled.parent)})
        assert choice.reason != "site MPICH-ABI library on LD_LIBRARY_PATH"


def test_bundled_mpich_is_found_through_its_package_metadata():
    if bundled_libmpi() is None:
        pytest.skip("the mpich wheel is not installed here")
    assert bundled_libmpi().name == "libmpi.so.12"
    assert (bundled_bindir() / "mpiexec").exists()


def test_world_size_mismatch_is_one_clear_line():
    check_world_size(2, {"OMPI_COMM_WORLD_SIZE": "2"})
    check_world_size(1, {})  # the launcher does not say: nothing to compare
    with pytest.raises(SiteMPIError, match="started 2 ranks but the loaded MPI library sees 1"):
        check_world_size(1, {"PMI_SIZE": "2"})


def rank_lines(folder: Path) -> list[str]:
    """What each rank of a probe wrote, in rank order."""
    return [p.read_text() for p in sorted(folder.glob("rank*.txt"))]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL", "MPI4PY_"))}
    env.pop("PARALLEL_CORE_SIMULATE_NODES", None)
    env.update(extra)
    return env


PROBE = textwrap.dedent(
    """
    import os, sys
    from parallel_core.mpi import get_context
    ctx = get_context()
    from mpi4py import MPI
    line = f"{ctx.rank} {ctx.size} {MPI.Get_library_version().split(',')[0].split()[0]}"
    open(f"rank{ctx.rank}.txt", "w").write(line)  # files: ranks' stdout lines can interleave
    """
)


def test_overlay_environment_under_bundled_mpiexec_runs_real_ranks(tmp_path):
    """What ``uv run --with X mpirun ...`` does: a second environment seeing this one's packages."""
    bindir = bundled_bindir()
    if bindir is None:
        pytest.skip("the mpich wheel is not installed here")
    overlay = tmp_path / "overlay"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(overlay)], check=True, timeout=120)
    site_packages = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    python = overlay / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # Like uv's overlay: the base environment's site-packages (and its .pth files) on sys.path.
    Path(target, "base.pth").write_text(f"import site; site.addsitedir({site_packages!r})\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = subprocess.run(
        [str(bindir / "mpiexec"), "-n", "2", str(python), "-c", PROBE],
        env=_clean_env(), capture_output=True, text=True, timeout=120, cwd=run_dir,
    )
    assert result.returncode == 0, result.stderr
    lines = rank_lines(run_dir)
    assert [line.split()[:2] for line in lines] == [["0", "2"], ["1", "2"]], result.stdout
    assert all(line.split()[2] == "MPICH" for line in lines), result.stdout


def open_mpi_mpirun() -> str | None:
    """Open MPI's mpirun on PATH (not the bundled MPICH one), or None."""
    ompi_info = shutil.which("ompi_info")
    if ompi_info is None:
        return None
    mpirun = Path(ompi_info).parent / "mpirun"
    return str(mpirun) if mpirun.exists() else None


# Importing parallel_core is enough for a program that then imports mpi4py itself.
BARE_PROBE = textwrap.dedent(
    """
    import parallel_core
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    line = f"{comm.Get_rank()} {comm.Get_size()} {MPI.Get_library_version().split(',')[0].split()[0]}"
    open(f"rank{comm.Get_rank()}.txt", "w").write(line)
    """
)


@pytest.mark.parametrize("probe", [PROBE, BARE_PROBE], ids=["get_context", "import-then-mpi4py"])
def test_open_mpi_mpirun_gets_the_site_library(probe, tmp_path):
    """The bug in the issue: under Open MPI's mpirun every rank aborted in MPI_Init."""
    mpirun = open_mpi_mpirun()
    if mpirun is None:
        pytest.skip("Open MPI is not installed (CI installs openmpi-bin)")
    env = _clean_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    result = subprocess.run(
        [mpirun, "-n", "2", sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = rank_lines(tmp_path)
    assert [line.split()[:2] for line in lines] == [["0", "2"], ["1", "2"]], result.stdout
    assert all("Open" in line.split()[2] for line in lines), result.stdout
