import json
import os

import pytest

from agent_async_train.cli import main

TINY = [
    "game.size=7",
    "game.gems=4",
    "game.walls=2",
    "game.view_radius=2",
    "game.max_turns=20",
    "dqn.hidden=[16]",
    "dqn.batch_size=16",
    "dqn.buffer_size=300",
    "dqn.learning_starts=40",
    "run.episodes_per_epoch=2",
    "run.eval_episodes=2",
]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_logs_checkpoint_and_resumes(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "run",
        "gemgrid",
        "--agents",
        "3",
        "--epochs",
        "2",
        "--out",
        str(out_dir),
        "--async-learning",
        "--parallel-actions",
        "--quiet",
        *TINY,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["agents"] == 3 and summary["epochs"] == 2 and summary["env_steps"] == 80
    assert summary["parallel"]["async_learning"] and summary["parallel"]["parallel_actions"]
    for name in ("checkpoint.pt", "metrics.csv", "summary.json", "config.json"):
        assert (out_dir / name).is_file(), name
    assert any((out_dir / "tensorboard").iterdir())
    rows = (out_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "time_lock_wait_s" in rows[0] and "policy_lag_mean" in rows[0]

    code, out, err = run_cli(
        capsys, "run", "--resume", str(out_dir / "checkpoint.pt"), "--epochs", "3", "--quiet"
    )
    assert code == 0, err
    assert json.loads(out)["epochs"] == 3
    assert len((out_dir / "metrics.csv").read_text().splitlines()) == 4

    code, out, err = run_cli(capsys, "evaluate", str(out_dir / "checkpoint.pt"), "--episodes", "3")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["epoch"] == 3 and ev["episodes"] == 3 and len(ev["greedy_per_agent"]) == 3
    assert "greedy" in err and "random" in err


def test_config_files_and_progress_output(tmp_path, capsys):
    yaml_cfg = tmp_path / "c.yaml"
    yaml_cfg.write_text("game:\n  agents: 2\nrun:\n  epochs: 1\n  tensorboard: false\n")
    code, out, err = run_cli(
        capsys, "run", "--config", str(yaml_cfg), "--out", str(tmp_path / "a"), *TINY
    )
    assert code == 0, err
    assert json.loads(out)["agents"] == 2
    assert "epoch   1" in err and "final greedy score" in err
    toml_cfg = tmp_path / "c.toml"
    toml_cfg.write_text("[game]\nagents = 2\n[run]\nepochs = 1\ntensorboard = false\n")
    code, out, err = run_cli(
        capsys, "run", "--config", str(toml_cfg), "--out", str(tmp_path / "b"), "--quiet", *TINY
    )
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "chess"], "unknown game 'chess'"),
        (["run", "dqn.lrr=0.1"], "unknown config key 'dqn.lrr'"),
        (["run", "dqn.lr=fast"], "dqn.lr must be a valid number"),
        (["run", "lr=0.1"], "bad config key 'lr'"),
        (["run", "parallel.replay_ratio=0"], "parallel.replay_ratio must be > 0"),
        (["run", "parallel.learners=-1"], "parallel.learners must be >= 0"),
        (["run", "--epochs", "0"], "run.epochs and run.episodes_per_epoch must be >= 1"),
        (["run", "run.eval_episodes=0"], "run.eval_episodes must be >= 1"),  # NaN score
        (["run", "dqn.eps_end=5"], "dqn.eps_start and dqn.eps_end must be in [0, 1]"),
        (["run", "--config", "/nonexistent.yaml"], "does not exist"),
        (["evaluate", "/nonexistent.pt"], "does not exist"),
        (["run", "--device", "gpu"], "--device: unknown device 'gpu'"),
        (["run", "--device", "cuda:0", "CUDA_VISIBLE_DEVICES="], "no CUDA device is visible"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "CUDA_VISIBLE_DEVICES=" in argv:  # hide every GPU, so the check is the same on any machine
        argv = [a for a in argv if a != "CUDA_VISIBLE_DEVICES="]
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and out == ""
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_corrupt_checkpoint_and_occupied_run_dir_leave_files_intact(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "run",
        "--epochs",
        "1",
        "--agents",
        "2",
        "--out",
        str(out_dir),
        "--quiet",
        "--no-tensorboard",
        *TINY,
    )
    assert code == 0, err
    ckpt = out_dir / "checkpoint.pt"
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()}

    # a fresh run into a directory that already holds one
    code, _, err = run_cli(capsys, "run", "--epochs", "1", "--out", str(out_dir), "--quiet", *TINY)
    assert code == 2 and "already holds a run" in err

    # changing the algorithm on resume is refused
    code, _, err = run_cli(capsys, "run", "--resume", str(ckpt), "--epochs", "2", "dqn.lr=0.5")
    assert code == 2 and "cannot change dqn.lr" in err
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file()} == before

    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    data = ckpt.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    for argv in (["run", "--resume", str(bad), "--epochs", "3"], ["evaluate", str(bad)]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and "corrupt" in err and out == "", err
    assert sorted(os.listdir(bad.parent)) == ["checkpoint.pt"]
    assert bad.read_bytes() == data[: len(data) // 2]


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "agent-train run gemgrid --agents 4" in capsys.readouterr().out


def test_games_lists_builtins(capsys):
    assert main(["games"]) == 0
    assert capsys.readouterr().out.split() == ["gemgrid", "gemgrid-pettingzoo", "pursuit", "sorrel:treasurehunt", "sorrel:tag"]


def test_evaluate_records_a_gemgrid_gif(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "run", "--epochs", "1", "--agents", "2", "--out", str(out_dir), "--quiet",
        "--no-tensorboard", *TINY,
    )
    assert code == 0, err
    gif = tmp_path / "episode.gif"
    code, out, err = run_cli(
        capsys, "evaluate", str(out_dir / "checkpoint.pt"), "--episodes", "2", "--record", str(gif)
    )
    assert code == 0, err
    assert json.loads(out)["recording"] == str(gif)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (7 * 16, 7 * 16)
        total_ms = 0
        for i in range(im.n_frames):  # Pillow merges identical frames, adding their durations
            im.seek(i)
            total_ms += im.info["duration"]
        assert total_ms == 21 * 150  # reset + 20 turns (game.max_turns=20), 150 ms each
    code, out, err = run_cli(capsys, "evaluate", str(out_dir / "checkpoint.pt"), "--record", "x.png")
    assert code == 2 and "give a .gif file name" in err


@pytest.mark.parametrize(
    "argv, check",
    [
        (["dqn.lr=5e-4", "dqn.buffer_size=1e3", "dqn.eps_decay_steps=2e2"], None),
        (["--epochs", "1e0"], None),
    ],
)
def test_scientific_notation_is_accepted_everywhere(argv, check, tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("dqn:\n  lr: 5e-4\n  learning_starts: 4e1\nrun:\n  epochs: 1\n")
    code, out, err = run_cli(
        capsys, "run", "--config", str(cfg_file), "--out", str(tmp_path / "r"), "--quiet",
        "--no-tensorboard", *TINY, *argv,
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["dqn"]["lr"] == 5e-4 and saved["dqn"]["learning_starts"] == 40
    assert isinstance(saved["dqn"]["learning_starts"], int)


def test_fixed_agent_count_games_refuse_other_counts(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "run", "agent_async_train.games.pettingzoo_adapter:GemGridParallelEnv",
        "game.options={num_agents: 3}", "--agents", "5", "--out", str(tmp_path / "r"),
    )
    assert code == 2 and "fixed number of agents (3)" in err


def test_argument_errors_answer_before_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys; from agent_async_train.cli import main; rc = main(['--agents', '-1']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "agent-train: error: game.agents must be >= 1"


def test_smoke_mode_shrinks_fresh_sorrel_runs_only(monkeypatch):
    from agent_async_train.cli import _config_from_args, build_parser

    monkeypatch.setenv("PARALLEL_RL_SMOKE", "1")
    ns = build_parser().parse_args(["run", "sorrel:treasurehunt", "--epochs", "20"])
    cfg, _ = _config_from_args(ns)
    assert cfg.run.epochs == 2 and cfg.run.episodes_per_epoch == 2
    assert cfg.game.options["world"] == {"height": 9, "width": 9}  # sorrel's default is 21x21
    assert cfg.game.options["experiment"] == {"max_turns": 10}
    ns = build_parser().parse_args(["run", "sorrel:treasurehunt", "game.options={world: {height: 7}}"])
    assert _config_from_args(ns)[0].game.options["world"] == {"height": 7, "width": 9}
