import pytest

from parallel_core import WorkerBudget, atomic_write, available_cores
from parallel_core.budget import MAX_WORKERS_ENV


def test_budget_defaults_to_available_cores():
    assert WorkerBudget().total == available_cores()


def test_budget_never_exceeds_cores(monkeypatch):
    monkeypatch.setenv(MAX_WORKERS_ENV, "4")
    assert available_cores() <= 4
    assert WorkerBudget(64).total == available_cores()
    assert WorkerBudget(64).requested == 64


@pytest.mark.parametrize(
    "total, demands, expected",
    [
        (8, (3, 4), (3, 2)),  # 3 outer workers, each gets 8 // 3 = 2 inner
        (8, (10, 4), (8, 1)),  # outer level takes everything
        (8, (2, 4), (2, 4)),
        (2, (5, 4), (2, 1)),
        (1, (5, 4), (1, 1)),
        (8, (1, 1, 4), (1, 1, 4)),
        (6, (2, 2, 2), (2, 2, 1)),
    ],
)
def test_budget_split(monkeypatch, total, demands, expected):
    monkeypatch.setattr("parallel_core.budget._affinity_cores", lambda: 8)
    monkeypatch.delenv(MAX_WORKERS_ENV, raising=False)
    budget = WorkerBudget(total)
    shares = budget.split(*demands)
    assert shares == expected
    product = 1
    for share in shares:
        product *= share
    assert product <= total


def test_bad_worker_cap_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(MAX_WORKERS_ENV, "lots")
    with pytest.raises(ValueError, match="PARALLEL_CORE_MAX_WORKERS"):
        available_cores()


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "out" / "result.json"
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("finished result")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "finished result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    fresh = tmp_path / "fresh.json"
    with atomic_write(fresh, "w") as f:
        f.write("{}")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    with atomic_write(kept, "w") as f:
        f.write("new")
    assert kept.stat().st_mode & 0o777 == 0o640


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
