"""Shared fixtures for the end-to-end tests."""

import os

import pytest

SHM = "/dev/shm"


def _mpich_segments() -> set[str]:
    if not os.path.isdir(SHM):
        return set()
    return {name for name in os.listdir(SHM) if name.startswith("mpich_shm_")}


@pytest.fixture(autouse=True)
def no_leaked_mpich_segments():
    """Remove the shared-memory segments of MPI jobs a test aborted on purpose.

    MPI_Abort (a rank that dies) skips MPICH's own clean-up; the jobs a test starts have
    ended when it returns, so segments that appeared meanwhile are theirs.
    """
    before = _mpich_segments()
    yield
    for name in _mpich_segments() - before:
        try:
            os.unlink(os.path.join(SHM, name))
        except OSError:
            pass
