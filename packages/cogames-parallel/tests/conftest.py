import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HELPERS = HERE / "helper_policies.py"


@pytest.fixture
def helpers() -> str:
    """Path of the misbehaving test policies, for `path.py:Class` specs."""
    return str(HELPERS)


@pytest.fixture(autouse=True)
def _no_sys_path_leak():
    before = list(sys.path)
    yield
    sys.path[:] = before
