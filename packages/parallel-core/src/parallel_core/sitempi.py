"""Which MPI library mpi4py loads: the one that can talk to the launcher that started us.

mpi4py >= 4 wheels pick ``libmpi`` when ``mpi4py.MPI`` is first imported; in a uv
environment that is the ``mpich`` wheel's library. Two cases go wrong without help:

- A site launcher that speaks PMIx (Open MPI's ``mpirun``, ``srun --mpi=pmix``): the
  wheel's MPICH aborts every rank in ``MPI_Init`` ("Runtime environment uses unsupported PMI
  version PMIx"). The site's own library has to be loaded instead.
- A uv overlay environment (``uv run --with X mpirun ...``): mpi4py looks for ``libmpi``
  under the overlay's prefix, not the base environment that holds the wheel, and falls back
  to whatever the system has (often nothing, or an Open MPI that runs every rank alone).
- A site MPICH-ABI library loaded with ``module load`` (LD_LIBRARY_PATH) under ``srun
  --mpi=pmi2`` or Hydra: mpi4py would still take the wheel's copy first and miss the fast
  interconnect.

:func:`configure_mpi4py` runs before ``from mpi4py import MPI`` (``get_context`` calls it):
it recognises the launcher from the variables it sets, finds a library that matches, and
exports mpi4py's own settings ``MPI4PY_LIBMPI`` and ``MPI4PY_MPIABI`` (children inherit
them). When no matching library exists it raises :class:`SiteMPIError` whose one line says
what to set. A user's own ``MPI4PY_LIBMPI``/``MPI4PY_MPIABI`` always win.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .cli import CliError

LIBMPI_ENV = "MPI4PY_LIBMPI"
MPIABI_ENV = "MPI4PY_MPIABI"

#: Open MPI's shared library (4.x and 5.x keep the same soname).
OPENMPI_LIB = "libmpi.so.40"
#: MPICH-ABI libraries (MPICH, Intel MPI, MVAPICH, Cray MPICH), in the order tried.
MPICH_LIBS = ("libmpi.so.12", "libmpi_cray.so.12", "libmpi.so")


class SiteMPIError(CliError):
    """No MPI library matches the launcher: one line saying what to set (exit 1 under ``run_cli``)."""


@dataclass(frozen=True)
class MPIChoice:
    """What :func:`choose_libmpi` decided: ``libmpi is None`` keeps mpi4py's own choice."""

    launcher: str | None  # "openmpi", "pmix", "pmi" or None (not started by a launcher)
    libmpi: str | None
    abi: str | None  # mpi4py's ABI name: "openmpi" or "mpich"
    reason: str


def launcher_kind(env: Mapping[str, str]) -> str | None:
    """The launcher that started this process, from the variables it sets in every rank.

    ``"openmpi"``: Open MPI's ``mpirun``/``prterun`` (``OMPI_COMM_WORLD_SIZE``);
    ``"pmix"``: another PMIx launcher such as ``srun --mpi=pmix`` (``PMIX_RANK``);
    ``"pmi"``: an MPICH-style PMI-1/2 launcher, Hydra's ``mpiexec`` or ``srun --mpi=pmi2``
    (``PMI_RANK``/``PMI_FD``/``PMI_PORT``); ``None`` otherwise.
    """
    if "OMPI_COMM_WORLD_SIZE" in env or "OMPI_COMM_WORLD_RANK" in env:
        return "openmpi"
    if "PMIX_RANK" in env:
        return "pmix"
    if any(name in env for name in ("PMI_RANK", "PMI_FD", "PMI_PORT", "PMI_SIZE")):
        return "pmi"
    return None


def expected_world_size(env: Mapping[str, str]) -> int | None:
    """Ranks the launcher started, where it says so (``None`` where it does not)."""
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def bundled_libmpi() -> Path | None:
    """``libmpi.so.12`` of the ``mpich`` wheel, wherever it is installed (None without it)."""
    try:
        dist = importlib.metadata.distribution("mpich")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name in ("libmpi.so.12", "libmpi.12.dylib"):
            path = Path(dist.locate_file(entry)).resolve()
            if path.exists():
                return path
    return None


def bundled_bindir() -> Path | None:
    """The ``bin`` folder holding the ``mpich`` wheel's ``mpiexec`` (None without the wheel)."""
    try:
        dist = importlib.metadata.distribution("mpich")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == "mpiexec" and entry.parent.name == "bin":
            path = Path(dist.locate_file(entry)).resolve()
            if path.exists():
                return path.parent
    return None


def _ld_library_dirs(env: Mapping[str, str]) -> list[Path]:
    return [Path(entry) for entry in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if entry]


def _all(dirs: list[Path], names: tuple[str, ...], skip: Path | None) -> list[Path]:
    """Every ``dir/name`` that exists, in order, never from the folder of ``skip`` (the bundled library)."""
    found = []
    for directory in dirs:
        if skip is not None and directory.resolve() == skip.parent:
            continue
        found.extend(directory / name for name in names if (directory / name).is_file())
    return found


def _first(dirs: list[Path], names: tuple[str, ...], skip: Path | None) -> Path | None:
    found = _all(dirs, names, skip)
    return found[0] if found else None


def _ldconfig_paths(name: str) -> list[Path]:
    """Paths of ``name`` in the dynamic linker's cache (``ldconfig -p``), 64-bit entries first."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if ldconfig is None:
        return []
    try:
        listing = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in listing.splitlines():
        library, _, path = line.strip().partition(" => ")
        if library.split(" ", 1)[0] == name and path:
            found.append((0 if "64" in library else 1, Path(path)))
    return [path for _, path in sorted(found, key=lambda item: item[0]) if path.exists()]


def find_openmpi_libmpi(env: Mapping[str, str]) -> Path | None:
    """The site's Open MPI ``libmpi.so.40``, looked for where Open MPI installs put it.

    In order: ``LD_LIBRARY_PATH`` (what ``module load openmpi`` sets), ``OPAL_PREFIX``/
    ``MPI_HOME``/``MPI_ROOT``, the prefix of Open MPI's tools on ``PATH`` (``ompi_info``,
    ``orterun``, ``prterun``, ``mpirun``), then the dynamic linker's cache (distribution
    packages such as Debian's ``openmpi-bin``).
    """
    found = _first(_ld_library_dirs(env), (OPENMPI_LIB,), None)
    if found is not None:
        return found
    prefixes = [Path(env[name]) for name in ("OPAL_PREFIX", "MPI_HOME", "MPI_ROOT") if env.get(name)]
    for tool in ("ompi_info", "orterun", "prterun", "mpirun"):
        located = shutil.which(tool, path=env.get("PATH"))
        if located is not None:
            prefixes.append(Path(located).resolve().parent.parent)
    dirs = [prefix / sub for prefix in prefixes for sub in ("lib", "lib64")]
    found = _first(dirs, (OPENMPI_LIB,), None)
    if found is not None:
        return found
    cached = _ldconfig_paths(OPENMPI_LIB)
    return cached[0] if cached else None


def _abi_of(path: Path) -> str:
    """mpi4py's ABI name for a library file (``libmpi.so`` may be a link to Open MPI's)."""
    return "openmpi" if Path(path).resolve().name.startswith(OPENMPI_LIB) else "mpich"


def _hint(kind: str) -> str:
    if kind == "openmpi":
        what = "Open MPI's launcher"
    else:
        what = "a PMIx launcher (e.g. srun --mpi=pmix)"
    return (
        f"this process was started by {what}, which the bundled MPICH library cannot join, "
        f"and no site MPI library was found: export {LIBMPI_ENV}=/path/to/your/libmpi.so.40 "
        f"{MPIABI_ENV}=openmpi (or your site MPI's libmpi and {MPIABI_ENV}=mpich), "
        "or launch with this environment's MPICH: uv run mpirun -n N ..."
    )


def choose_libmpi(env: Mapping[str, str] | None = None) -> MPIChoice:
    """Decide which ``libmpi`` mpi4py must load for the launcher in ``env`` (no side effects).

    Raises :class:`SiteMPIError` when the launcher needs a library that is not there.
    """
    env = os.environ if env is None else env
    kind = launcher_kind(env)
    if env.get(LIBMPI_ENV) or env.get(MPIABI_ENV):
        return MPIChoice(kind, env.get(LIBMPI_ENV), env.get(MPIABI_ENV), "set by the user")
    if kind is None:
        return MPIChoice(None, None, None, "no MPI launcher")
    bundled = bundled_libmpi()
    if kind in ("openmpi", "pmix"):
        # The wheel's MPICH speaks PMI-1/2 only: take the site library the launcher belongs to.
        names = (OPENMPI_LIB,) if kind == "openmpi" else (OPENMPI_LIB, *MPICH_LIBS)
        found = _first(_ld_library_dirs(env), names, bundled)
        if found is None:
            found = find_openmpi_libmpi(env)
        if found is None:
            raise SiteMPIError(_hint(kind))
        return MPIChoice(kind, str(found), _abi_of(found), f"site MPI for the {kind} launcher")
    # PMI-1/2 (Hydra, srun --mpi=pmi2): any MPICH-ABI library can join. A site one on
    # LD_LIBRARY_PATH (module load mpich / cray-mpich / intel-mpi) is the one to use: it
    # knows the fast interconnect, and mpi4py would otherwise take the wheel's first.
    site = next(
        (p for p in _all(_ld_library_dirs(env), MPICH_LIBS, bundled) if _abi_of(p) == "mpich"), None
    )
    if site is not None:
        return MPIChoice(kind, str(site), "mpich", "site MPICH-ABI library on LD_LIBRARY_PATH")
    # Else the bundled MPICH. mpi4py looks for it only under this interpreter's own prefix,
    # so an overlay environment (uv run --with X) has to be pointed at it.
    if bundled is None or bundled.parent == Path(sys.exec_prefix).resolve() / "lib":
        return MPIChoice(kind, None, None, "mpi4py's default library")
    return MPIChoice(kind, str(bundled), "mpich", "bundled MPICH outside this interpreter's prefix")


def configure_mpi4py(env: os._Environ | None = None) -> MPIChoice:
    """Point mpi4py at the MPI library that matches the launcher; call before ``from mpi4py import MPI``.

    Exports ``MPI4PY_LIBMPI`` and ``MPI4PY_MPIABI`` and preloads the library (so it is found
    even outside the linker's search path). Does nothing once ``mpi4py.MPI`` is imported.
    """
    env = os.environ if env is None else env
    if "mpi4py.MPI" in sys.modules:
        return MPIChoice(launcher_kind(env), None, None, "mpi4py.MPI already imported")
    choice = choose_libmpi(env)
    if choice.libmpi is not None and choice.reason != "set by the user":
        env[LIBMPI_ENV] = choice.libmpi
        env[MPIABI_ENV] = choice.abi or _abi_of(Path(choice.libmpi))
    if choice.libmpi is not None and os.path.isfile(choice.libmpi):
        # mpi4py opens MPI4PY_LIBMPI only to guess the ABI; with MPI4PY_MPIABI set, the
        # extension module finds libmpi through the linker, which reuses a loaded soname.
        try:
            ctypes.CDLL(choice.libmpi, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
        except OSError as exc:
            raise SiteMPIError(f"cannot load the MPI library {choice.libmpi}: {exc}") from None
    return choice


def check_world_size(size: int, env: Mapping[str, str] | None = None) -> None:
    """Fail with one line when the loaded MPI sees fewer ranks than the launcher started.

    A library that does not understand its launcher either aborts in ``MPI_Init`` or,
    worse, runs every rank as a separate one-rank job that silently repeats the work.
    """
    env = os.environ if env is None else env
    expected = expected_world_size(env)
    if expected is not None and expected != size:
        raise SiteMPIError(
            f"the launcher started {expected} ranks but the loaded MPI library sees {size} "
            f"(the library does not match the launcher): set {LIBMPI_ENV} and {MPIABI_ENV} "
            "to your launcher's MPI, or launch with this environment's MPICH: uv run mpirun -n N ..."
        )
