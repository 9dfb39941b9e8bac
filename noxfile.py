"""Test sessions: every package alone in its own environment, so a missing dependency fails.

    uv run nox -l                                  # list sessions
    uv run nox -s tests-cpu tests-cuda tests-mpi tests-e2e   # what CI runs (.ci/run)
    uv run nox -s "tests-cpu(package='empo-distributed')"    # one package

Each environment is filled from ``uv.lock`` by ``uv sync --frozen --package NAME --all-extras``:
exactly the versions a user gets, and nothing the package did not declare (its optional
upstream extras included, so the tests against real CoGames and sorrel run).

A package gets a ``tests-mpi`` or ``tests-cuda`` session only when its tests carry that
marker, and a session whose pytest collects nothing fails: every session tests something.
"""

from __future__ import annotations

import re
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests-cpu", "tests-cuda", "tests-mpi", "tests-e2e"]

# Every test session lists its slowest tests: CI must stay under 30 minutes, and the log
# shows where the time goes.
DURATIONS = ("--durations=15", "--durations-min=2")

PACKAGES = [
    "parallel-core",
    "empo-distributed",
    "cogames-parallel",
    "esper-multigpu",
    "agent-async-train",
]


def packages_marked(marker: str) -> list[str]:
    """Packages whose tests use ``pytest.mark.<marker>`` (so the session selects something)."""
    pattern = re.compile(rf"\bmark\.{marker}\b")
    return [
        package
        for package in PACKAGES
        if any(pattern.search(path.read_text()) for path in Path(f"packages/{package}/tests").glob("*.py"))
    ]


def sync(session: nox.Session, *args: str) -> None:
    """Install from the lock into this session's virtualenv."""
    session.run_install(
        "uv",
        "sync",
        "--frozen",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def run_package_tests(session: nox.Session, package: str, marker: str, *launcher: str) -> None:
    """Sync the package alone, then run its tests selected by ``marker`` (under ``launcher``)."""
    sync(session, "--package", package, "--all-extras", "--group", "test")
    python = ("python", "-m", "pytest") if launcher else ("pytest",)
    session.run(
        *launcher, *python, f"packages/{package}/tests", "-m", marker, "-p", "no:cacheprovider",
        *DURATIONS, *session.posargs,
    )


@nox.session(name="tests-cpu")
@nox.parametrize("package", PACKAGES)
def tests_cpu(session: nox.Session, package: str) -> None:
    """The package's tests, minus those that need MPI ranks or a GPU."""
    run_package_tests(session, package, "not mpi and not cuda")


@nox.session(name="tests-cuda")
@nox.parametrize("package", packages_marked("cuda"))
def tests_cuda(session: nox.Session, package: str) -> None:
    """Tests marked ``cuda``; without a GPU they report as skipped (a skip is not an empty run)."""
    run_package_tests(session, package, "cuda")


@nox.session(name="tests-mpi")
@nox.parametrize("package", packages_marked("mpi"))
def tests_mpi(session: nox.Session, package: str) -> None:
    """Tests marked ``mpi``, run as two real MPI ranks (mpirun from the mpich wheel)."""
    run_package_tests(session, package, "mpi", "mpirun", "-n", "2")


@nox.session(name="tests-e2e")
def tests_e2e(session: nox.Session) -> None:
    """Cross-package and end-to-end tests (CLIs as a user runs them, mpirun jobs, Dockerfile)."""
    sync(session, "--all-packages", "--all-extras", "--group", "dev")
    session.run("pytest", "tests", *DURATIONS, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", "packages", "tests", "tools", "noxfile.py")
