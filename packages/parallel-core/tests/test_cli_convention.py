"""The shared CLI convention: one error line, exit codes, SIGTERM unwinding, smoke mode."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from parallel_core.cli import (
    ArgumentParser,
    CliError,
    UsageError,
    add_quiet_flag,
    emit_json,
    run_cli,
    smoke_mode,
)


def test_usage_error_is_one_line_and_exit_2(capsys):
    def body():
        raise UsageError("--episodes must be >= 1, got 0\n(use a positive count)")

    assert run_cli("prog", body) == 2
    err = capsys.readouterr().err
    assert err == "prog: error: --episodes must be >= 1, got 0 (use a positive count)\n"


def test_cli_error_exits_1_and_success_returns_body_code(capsys):
    def failing():
        raise CliError("cannot read ckpt.pt: no such file")

    assert run_cli("prog", failing) == 1
    assert capsys.readouterr().err == "prog: error: cannot read ckpt.pt: no such file\n"
    assert run_cli("prog", lambda: None) == 0
    assert run_cli("prog", lambda: 3) == 3


def test_keyboard_interrupt_exits_130_with_message(capsys):
    def body():
        raise KeyboardInterrupt

    assert run_cli("prog", body, interrupted="interrupted; finished files are intact") == 130
    assert capsys.readouterr().err == "prog: interrupted; finished files are intact\n"


def test_argument_parser_error_is_one_line_exit_2(capsys):
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--n", type=int)
    add_quiet_flag(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--n", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("prog: error: argument --n: invalid int value")
    assert err[-1].endswith("(see prog --help)")
    assert parser.parse_args(["-q"]).quiet is True


def test_emit_json_handles_numpy_values():
    np = pytest.importorskip("numpy")
    out = io.StringIO()
    emit_json({"a": np.float64(1.5), "b": np.arange(3), "c": np.int32(7)}, out)
    assert out.getvalue() == '{\n  "a": 1.5,\n  "b": [\n    0,\n    1,\n    2\n  ],\n  "c": 7\n}\n'


def test_smoke_mode_reads_the_environment(monkeypatch):
    monkeypatch.delenv("PARALLEL_RL_SMOKE", raising=False)
    assert not smoke_mode()
    monkeypatch.setenv("PARALLEL_RL_SMOKE", "0")
    assert not smoke_mode()
    monkeypatch.setenv("PARALLEL_RL_SMOKE", "1")
    assert smoke_mode()


def test_sigterm_unwinds_finally_blocks_and_exits_143(tmp_path):
    """SIGTERM (what SLURM sends) runs cleanup like Ctrl-C and exits 128 + 15."""
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(
        f"""
        import sys, time
        from parallel_core.cli import run_cli

        def body():
            try:
                print("ready", flush=True)
                time.sleep(60)
            finally:
                open({str(marker)!r}, "w").close()

        sys.exit(run_cli("prog", body))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert marker.exists()
    assert err.strip().splitlines() == ["prog: terminated"]
