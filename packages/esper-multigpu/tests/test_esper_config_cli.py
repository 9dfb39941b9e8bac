"""Strict config files, flag precedence, and the CLI's errors and outputs."""

import json

import pytest

from esper_multigpu.cli import main
from esper_multigpu.config import ConfigError, build_config, read_config_file


def test_config_file_is_strict(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("n_envs: 3\nmax_epochs: 7\nppo:\n  lr: 0.001\nenv:\n  width: 8\n")
    cfg = build_config("ppo", read_config_file(good), {"max_epochs": 5})
    assert (cfg.n_envs, cfg.max_epochs, cfg.ppo.lr, cfg.env.width) == (3, 5, 0.001, 8)
    assert cfg.env_config().max_epochs == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_envs: 3\nnenvs: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'nenvs'"):
        read_config_file(bad)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"ppo": {"learning_rate": 1}}))
    with pytest.raises(ConfigError, match="ppo: unknown key 'learning_rate'"):
        read_config_file(nested)
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="--slots: input should be 'early', 'mid' or 'late'; got 'top'"):
        build_config("ppo", {}, {"slots": ["top"]})


def test_heuristic_defaults_to_one_env():
    cfg = build_config("heuristic", {}, {})
    assert (cfg.n_envs, cfg.episodes, cfg.max_epochs, cfg.env.width) == (1, 1, 12, 4)
    assert build_config("ppo", {}, {}).n_envs == 4


TINY = ["--task", "synthetic", "--max-epochs", "3", "--width", "8", "--quiet", "--no-telemetry"]


def test_cli_runs_and_prints_json(capsys):
    assert main(["train", "heuristic", "--devices", "cpu", *TINY]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["mode"] == "heuristic" and out["episodes"] == 1 and out["assignment"] == {"cpu": 1}
    assert captured.err == ""  # --quiet: no status lines (the device line included), no bar


def test_cli_ppo_with_config_save_and_telemetry(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("n_envs: 2\nepisodes: 2\nenv: {train_batches: 1}\n")  # one step per epoch: enough here
    args = [
        "train",
        "ppo",
        "--config",
        str(cfg),
        "--devices",
        "cpu",
        "cpu",
        "--task",
        "synthetic",
        "--max-epochs",
        "3",
        "--width",
        "8",
        "--quiet",
        "--telemetry-dir",
        str(tmp_path / "tel"),
        "--save",
        str(tmp_path / "ck.pt"),
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["assignment"] == {"cpu#0": 1, "cpu#1": 1} and (tmp_path / "ck.pt").exists()
    assert sum(b["skipped_steps"] for b in out["batches"]) == 0
    assert main(["telemetry", "validate", str(tmp_path / "tel" / "ppo.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    import torch

    # a GPU this machine does not have (cuda:0 on a CPU box, cuda:1 on a 1-GPU box, ...)
    absent = f"cuda:{torch.cuda.device_count()}"
    assert main(["train", "ppo", "--devices", "cuda:0", absent, *TINY]) == 2
    err = capsys.readouterr().err
    assert f"requested {absent}" in err and "visible devices: cpu" in err and err.count("\n") == 1
    assert (
        main(
            [
                "train",
                "ppo",
                "--task",
                "cifar10",
                "--data-dir",
                str(tmp_path),
                "--devices",
                "cpu",
                "--quiet",
            ]
        )
        == 2
    )
    assert "CIFAR-10 not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("typo: 1\n")
    assert main(["train", "heuristic", "--config", str(bad), *TINY]) == 2
    assert "unknown key 'typo'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "ppo", "--amp", "fp8"])
    assert exc.value.code == 2


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "ppo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "esper train ppo --devices cuda:0 cuda:1" in out and "--amp" in out


def test_bad_telemetry_file_is_reported(tmp_path, capsys):
    p = tmp_path / "t.jsonl"
    p.write_text('{"schema": "esper.telemetry/2", "type": "epoch"}\nnot json\n')
    assert main(["telemetry", "validate", str(p)]) == 1
    err = capsys.readouterr().err
    assert "line 1: epoch: missing field 'train_loss'" in err and "line 2: not JSON" in err


def test_cifar10_never_downloads_and_reports_bad_files(tmp_path):
    from esper_multigpu.tolaria.tasks import TaskError, load_task

    with pytest.raises(TaskError, match="needs --data-dir"):
        load_task("cifar10", None)
    with pytest.raises(TaskError, match="CIFAR-10 not found: expected"):
        load_task("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(TaskError, match="incomplete or corrupt"):
        load_task("cifar10", tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cifar-10-batches-py", "data_batch_1"]
    with pytest.raises(TaskError, match="unknown task 'mnist'"):
        load_task("mnist")


@pytest.mark.parametrize(
    "text, message",
    [
        ("n_envs: two\n", "n_envs: input should be a valid integer; got 'two'"),
        ("devices: cpu\n", "devices: input should be a valid list"),
        ("gates: {grad_vanish: 1e-7}\n", "gates.grad_vanish: input should be a valid number; got '1e-7'"),
        ("env: {width: 6}\n", "env.width: input should be a multiple of 4; got 6"),
        ("env: {batch_size: 0}\n", "env.batch_size: input should be greater than or equal to 1; got 0"),
        ("ppo: {lr: -1}\n", "ppo.lr: input should be greater than 0; got -1"),
        ("gates: {min_grad_health: 2}\n", "gates.min_grad_health: input should be less than or equal to 1"),
        ("gates: {blend_epochs: 0}\n", "gates.blend_epochs: input should be greater than or equal to 1"),
        ("gates: {grad_vanish: 1.0, grad_explode: 0.5}\n", "gates.grad_vanish (1.0) must be below gates.grad_explode (0.5)"),
        ("heuristic: {preferences: {early: [big]}}\n", "heuristic.preferences.early: unknown blueprint(s) ['big']"),
        ("heuristic: {slot_order: [mid, mid]}\n", "heuristic.slot_order: slots repeat"),
        ("reward: {rent_shape: cubic}\n", "reward.rent_shape"),
        ("amp: fp8\n", "amp: input should be 'off', 'bf16' or 'fp16'; got 'fp8'"),
        ("max_seeds: 0\n", "max_seeds: input should be greater than or equal to 1; got 0"),
        ("blueprints: []\n", "blueprints must name at least one blueprint"),
    ],
)
def test_bad_config_values_are_one_line_usage_errors(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    flags = [a for a in TINY if a not in ("--width", "8")]
    assert main(["train", "ppo", "--config", str(bad), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("esper: error: ") and message in err and err.count("\n") == 1


BAD_FLAGS = [
    (["--n-envs", "0"], "argument --n-envs: --n-envs must be >= 1; got 0"),
    (["--episodes", "x"], "argument --episodes: --episodes must be an integer; got 'x'"),
    (["--max-epochs", "1"], "argument --max-epochs: --max-epochs must be >= 2; got 1"),
    (["--lr", "-1"], "argument --lr: --lr must be a finite number > 0; got -1"),
    (["--width", "6"], "--width: input should be a multiple of 4; got 6"),
    (["--devices", "tpu"], "--devices: unknown device 'tpu'"),
    (["--resume", "missing.pt"], "--resume: checkpoint missing.pt does not exist"),
    (["--val-every", "0"], "argument --val-every: --val-every must be >= 1; got 0"),
    (["--val-episodes", "-1"], "argument --val-episodes: --val-episodes must be >= 1; got -1"),
    (["--keep-policy", "val"], "--keep-policy val: nowhere to write the kept policy; pass --kept-policy FILE or --save CKPT"),
    (["--keep-policy", "first"], "argument --keep-policy: invalid choice: 'first'"),
    (["eval", "ppo", "--policy", "missing.pt"], "--policy: missing.pt does not exist"),
    (["eval", "ppo"], "the following arguments are required: --policy"),
    (["eval", "heuristic", "--episodes", "0"], "argument --episodes: --episodes must be >= 1; got 0"),
]


def test_each_bad_flag_names_itself_before_torch_is_imported(tmp_path):
    """One line, exit 2, the flag in the message, and torch never imported (so it is fast).
    One fresh interpreter runs every case (a process start each cost more than the checks)."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, json, sys; from esper_multigpu.cli import main\n"
        "out = []\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            rc = main(args if args[0] == 'eval' else ['train', 'ppo', *args])\n"
        "        except SystemExit as exc:  # argparse's own errors exit\n"
        "            rc = exc.code\n"
        "    out.append([rc, err.getvalue()])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([args for args, _ in BAD_FLAGS])],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for (args, message), (rc, err) in zip(BAD_FLAGS, json.loads(proc.stdout), strict=True):
        assert rc == 2, (args, err)
        assert err.count("\n") == 1 and message in err, (args, err)


def test_unwritable_output_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = [
        "train",
        "heuristic",
        "--devices",
        "cpu",
        *TINY[:-1],
        "--telemetry-dir",
        str(blocker / "t"),
    ]
    assert main(args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the env -> device line
    assert last.startswith("esper: error: --telemetry-dir ") and "cannot write there" in last


#: sha256 of ``load_digits().images`` (float64, C order) and ``.target`` (int64) with the
#: locked scikit-learn; importing scikit-learn to compare live costs ~6 s of CPU here
DIGITS_SHA256 = (
    "20def7f70a702f0af9732fbba4375e147a7d54fe70d8c45569b8e7c1c7010c10",
    "a3c91c262eddcf7ba8f0e37507c30284493c9b20412ffe4af30d536401f7ba21",
)


def test_digits_read_from_the_wheel_equal_load_digits():
    """The digits are read from scikit-learn's data file without importing scikit-learn
    (2-6 s of CPU per process), and they are load_digits' arrays byte for byte."""
    import hashlib
    import sys

    import numpy as np

    from esper_multigpu.tolaria import tasks

    had_sklearn = "sklearn" in sys.modules
    images, labels = tasks.digits_arrays()
    assert had_sklearn or "sklearn" not in sys.modules
    assert images.shape == (1797, 8, 8) and images.dtype == np.float64 and labels.dtype == np.int64
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()  # noqa: E731
    assert (digest(images), digest(labels)) == DIGITS_SHA256


def test_smoke_mode_keeps_the_code_path_with_fewer_steps(monkeypatch):
    """PARALLEL_RL_SMOKE=1: at most 2 envs x 3 epochs and 4 optimisation steps per epoch."""
    from esper_multigpu.cli import SMOKE_TRAIN_BATCHES, _smoke
    from esper_multigpu.tolaria.env import MorphoEnv
    from esper_multigpu.tolaria.tasks import load_synthetic_task

    cfg = build_config("ppo", {}, {"n_envs": 8, "episodes": 64})
    _smoke(cfg)
    assert (cfg.n_envs, cfg.episodes, cfg.max_epochs) == (2, 2, 3)
    assert cfg.env.train_batches == SMOKE_TRAIN_BATCHES == 4
    task = load_synthetic_task(n_train=640)  # 10 batches of 64
    data = (task.x_train, task.y_train, task.x_val, task.y_val)
    assert MorphoEnv(0, "cpu", data, task.n_classes, config=cfg.env_config()).n_batches == 4
    full = build_config("ppo", {}, {}).env_config()
    assert full.train_batches is None and MorphoEnv(0, "cpu", data, task.n_classes, config=full).n_batches == 10
