"""End-to-end: the `esper` CLI as a user runs it, offline, on CPU."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("esper_multigpu")

from esper_multigpu.telemetry import TelemetrySink, read_records, validate_file  # noqa: E402


def esper(*args, cwd, timeout=900, smoke=False):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PARALLEL_RL_SMOKE", None)
    if smoke:
        env["PARALLEL_RL_SMOKE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "esper_multigpu", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lifecycle(path):
    return [r for r in map(json.loads, open(path)) if r["type"] == "lifecycle"]


def test_ppo_one_episode_on_cpu_with_three_slots(tmp_path):
    proc = esper(
        "train", "ppo", "--devices", "cpu", "--episodes", "1", "--max-epochs", "6",
        "--slots", "early", "mid", "late", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "ppo" and out["episodes"] == 1 and out["assignment"] == {"cpu": 1}
    assert out["amp_effective"] == {"cpu": "off"} and out["host_params"] < 2000
    assert "1 env(s) -> devices: cpu: 1" in proc.stderr and "batch 1/1" in proc.stderr
    tel = tmp_path / "esper-telemetry" / "ppo.jsonl"
    n, errors = validate_file(tel)
    assert errors == [] and n == sum(out["telemetry_records"].values())
    assert out["telemetry_records"]["slot"] == 6 * 3
    assert (tmp_path / "esper-telemetry" / "tb" / "ppo").is_dir()  # TensorBoard scalars beside it
    png = tmp_path / "curves.png"
    proc = esper("telemetry", "plot", str(tel), "--output", str(png), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and json.loads(proc.stdout)["episodes"] == 1
    # a run still going: slot records of a batch whose batch record is not written yet
    slot = next(r for r in map(json.loads, open(tel)) if r["type"] == "slot")
    with open(tel, "a") as f:
        f.write(json.dumps({**slot, "episode": 1, "batch": 1}) + "\n")
    proc = esper("telemetry", "plot", str(tel), "--output", str(png), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["episodes"] == 1, proc.stderr


def test_heuristic_grows_seeds_in_several_slots(tmp_path):
    proc = esper("train", "heuristic", "--task", "synthetic", "--max-epochs", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "heuristic" and out["max_epochs"] == 8
    tel = tmp_path / "esper-telemetry" / "heuristic.jsonl"
    assert validate_file(tel)[1] == []
    germinated = {r["slot"] for r in lifecycle(tel) if r["event"] == "germinated"}
    assert len(germinated) > 1, germinated


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has two GPUs")
def test_two_gpus_requested_without_them_exits_2_before_torch(tmp_path):
    t0 = time.perf_counter()
    proc = esper("train", "ppo", "--devices", "cuda:0", "cuda:1", cwd=tmp_path, timeout=300)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2
    assert proc.stderr.startswith("esper: error: requested cuda:")
    visible = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert f"visible devices: {', '.join(visible)}" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "esper-telemetry").exists()
    if torch.cuda.device_count() == 0:  # answered without importing torch (~1 s on an idle core)
        assert elapsed < 20, elapsed


def test_telemetry_validate_command_and_help(tmp_path):
    proc = esper("--help", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "examples:" in proc.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema": "esper.telemetry/0", "type": "run"}\n')
    proc = esper("telemetry", "validate", str(bad), cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "expected 'esper.telemetry/2'" in proc.stderr


@pytest.mark.parametrize("sig, code, status", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_keeps_telemetry(tmp_path, sig, code, status):
    """Records are flushed as written (tail -f works) and survive SIGTERM/Ctrl-C; the file ends
    with an `end` record saying how the run ended."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PARALLEL_RL_SMOKE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "esper_multigpu", "train", "fixed", "--task", "synthetic",
         "--episodes", "200", "--max-epochs", "3", "--quiet", "--no-tensorboard"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    tel = tmp_path / "esper-telemetry" / "fixed.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if tel.exists() and sum(r["type"] == "epoch" for r in read_records(tel)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    seen = len(read_records(tel))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith("esper: ")
    recs = read_records(tel)
    assert len(recs) >= seen and validate_file(tel)[1] == []
    assert recs[-1]["type"] == "end" and recs[-1]["status"] == status


def test_a_crash_is_recorded_and_keeps_what_was_written(tmp_path):
    with pytest.raises(RuntimeError):
        with TelemetrySink(tmp_path, "x") as sink:
            sink.write("end", status="completed", episodes_done=0, error=None)
            raise RuntimeError("boom")
    recs = read_records(tmp_path / "x.jsonl")
    assert [r["status"] for r in recs] == ["completed", "crashed"] and "boom" in recs[-1]["error"]


@pytest.mark.slow
def test_no_arguments_runs_the_default_job(tmp_path):
    """`esper` alone runs the demo job: PPO, 2 envs, 2 episodes of 12 epochs on digits.
    It runs here shrunk by PARALLEL_RL_SMOKE=1 (3 epochs of 4 steps; the full job is ~40x
    the work and proves nothing more); the unshrunk job's shape is checked from its config."""
    from esper_multigpu.cli import DEFAULT_JOB, _overrides, build_parser
    from esper_multigpu.config import build_config

    full = build_config("ppo", {}, _overrides(build_parser().parse_args(list(DEFAULT_JOB))))
    assert (full.mode, full.task, full.n_envs, full.episodes, full.max_epochs) == ("ppo", "digits", 2, 2, 12)
    proc = esper(cwd=tmp_path, timeout=900, smoke=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["mode"] == "ppo" and out["task"] == "digits" and out["episodes"] == 2 and out["n_envs"] == 2
    assert out["max_epochs"] == 3 and out["host_params"] == 1702
    assert validate_file(tmp_path / "esper-telemetry" / "ppo.jsonl")[1] == []


def test_bench_upstream_fails_with_one_line(tmp_path):
    """`bench_esper.py --upstream PATH`: not a checkout -> exit 2; a checkout whose
    dependencies are missing here -> exit 1 naming them (nothing is installed)."""
    bench = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_esper.py")
    run = lambda path: subprocess.run(  # noqa: E731
        [sys.executable, bench, "--upstream", str(path)], capture_output=True, text=True, timeout=120
    )
    proc = run(tmp_path)
    assert proc.returncode == 2 and "not an esper-lite checkout" in proc.stderr
    (tmp_path / "src/esper/simic/training").mkdir(parents=True)
    (tmp_path / "src/esper/simic/training/vectorized.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "esper-lite"\ndependencies = ["numpy>=1", "no-such-dist-here>=0.1"]\n'
    )
    proc = run(tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "it needs no-such-dist-here, not installed" in lines[0]


def test_bench_checks_config_flags_before_any_work(tmp_path):
    """A bench flag esper's config refuses is one usage line (exit 2), not a traceback later."""
    bench = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_esper.py")
    proc = subprocess.run(
        [sys.executable, bench, "--learning", "--ppo-ent-coef", "-1", "--output", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "bench_esper.py: error: ppo.ent_coef: input should be greater than or equal to 0; got -1.0"
    )
    assert not (tmp_path / "b.json").exists()


def _bench_module():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_esper.py")
    spec = importlib.util.spec_from_file_location("bench_esper_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_checks_its_validation_flags(capsys):
    """--val-every/--val-episodes < 1 are usage errors of the bench (its choice of the
    policy is esper's own PolicySelector, tested in packages/esper-multigpu)."""
    bench = _bench_module()
    for flag in ("--val-every", "--val-episodes"):
        with pytest.raises(SystemExit) as exc:
            bench.main(["--learning", flag, "0"])
        assert exc.value.code == 2
        # (the program name is argv[0]'s: pytest's here, bench_esper.py's from the shell)
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f" error: {flag}: must be >= 1; got 0")


def test_train_keeps_the_validated_policy_and_eval_reports_it_as_the_bench_does(tmp_path):
    """`esper train ppo --keep-policy val ... && esper eval ppo --policy ...` as a user types
    them: the checkpoint and the kept policy written, the evaluation's JSON on stdout equal
    to the benchmark's evaluate() for the same policy and held-out hosts."""
    tiny = ["--task", "synthetic", "--width", "8", "--max-epochs", "3", "--devices", "cpu", "--no-tensorboard"]
    proc = esper(
        "train", "ppo", *tiny, "--n-envs", "1", "--episodes", "2", "--keep-policy", "val", "--val-every", "1",
        "--val-episodes", "2", "--save", "ck.pt", "--kept-policy", "kept.pt", "--quiet", cwd=tmp_path, smoke=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kept = json.loads(proc.stdout)["kept_policy"]
    assert kept["rule"] == "val" and (tmp_path / "ck.pt").exists() and (tmp_path / "kept.pt").exists()
    tel = tmp_path / "esper-telemetry" / "ppo.jsonl"
    assert validate_file(tel)[1] == [] and [r["batch"] for r in read_records(tel) if r["type"] == "kept"] == [kept["batch"]]
    proc = esper("eval", "ppo", "--policy", "kept.pt", "--episodes", "2", "--seed", "10000", cwd=tmp_path, smoke=True)
    assert proc.returncode == 0, proc.stderr
    ev = json.loads(proc.stdout)
    assert "batch 1/1" in proc.stderr  # progress on stderr, JSON alone on stdout
    assert ev["kept"]["batch"] == kept["batch"] and ev["episodes"] == 2
    # the benchmark's evaluate() on the same policy, settings and hosts: the same numbers
    policy = torch.load(tmp_path / "kept.pt", weights_only=True)
    settings = policy["config"]
    ref = _bench_module().evaluate(
        "ppo", ["cpu"], 2, 10000, settings["max_epochs"], agent_state=policy["agent"], task=settings["task"],
        env=settings["env"], reward=settings["reward"],
    )  # fmt: skip
    for key in ("val_acc_mean", "val_acc_ci95", "added_params_mean", "return_mean", "val_acc", "added_params", "returns"):
        assert ev[key] == ref[key], key
