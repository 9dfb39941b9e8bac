"""Run by `nox -s tests-mpi` as `mpirun -n 2 python -m pytest -m mpi`."""

import pytest

from cogames_parallel.cli import main
from cogames_parallel.evaluate import evaluate
from cogames_parallel.report import to_json


@pytest.mark.mpi
def test_mpi_backend_output_matches_serial(capsys):
    from parallel_core.mpi import get_context

    ctx = get_context()
    if not ctx.is_distributed:
        pytest.skip("needs mpirun -n 2")
    args = [
        "-m",
        "harvest.open",
        "-m",
        "delivery.open",
        "-v",
        "small",
        "-p",
        "random",
        "-p",
        "greedy",
        "-e",
        "3",
        "-s",
        "20",
        "--action-timeout-ms",
        "0",
        "--seed",
        "9",
    ]
    code = main(["eval", *args, "--backend", "mpi", "--format", "json", "-q"])
    out = capsys.readouterr().out
    ctx.barrier()  # before any assert, so a failing rank cannot leave the other waiting
    assert code == 0
    if ctx.is_root:
        serial = evaluate(
            ["harvest.open", "delivery.open"],
            ["random", "greedy"],
            variants=["small"],
            episodes=3,
            steps=20,
            action_timeout_ms=0,
            seed=9,
        )
        assert out == to_json(serial)
    else:
        assert out == ""


@pytest.mark.mpi
def test_mpi_failures_reach_every_rank_exit_code(capsys, helpers):
    from parallel_core.mpi import get_context

    ctx = get_context()
    if not ctx.is_distributed:
        pytest.skip("needs mpirun -n 2")
    code = main(
        [
            "eval",
            "-m",
            "harvest.open",
            "-p",
            f"class={helpers}:CrashPolicy,kw.at=2",
            "-e",
            "4",
            "-s",
            "5",
            "--backend",
            "mpi",
            "--format",
            "json",
            "-q",
        ]
    )
    assert code == 1  # the root's verdict is broadcast, so all ranks exit alike


@pytest.mark.mpi
def test_mpi_bad_input_is_reported_once(capsys):
    from parallel_core.mpi import get_context

    ctx = get_context()
    if not ctx.is_distributed:
        pytest.skip("needs mpirun -n 2")
    code = main(["eval", "-m", "nope", "--backend", "mpi", "-q"])
    err = capsys.readouterr().err
    assert code == 2  # every rank exits 2, only the root says why
    assert err.count("no mission matches 'nope'") == (1 if ctx.is_root else 0)
