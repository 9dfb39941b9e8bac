import json

import pytest

from cogames_parallel.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_json_and_yaml_carry_the_same_data(capsys):
    args = [
        "eval",
        "-m",
        "harvest.open",
        "-v",
        "small",
        "-p",
        "random",
        "-p",
        "greedy",
        "-e",
        "2",
        "-s",
        "15",
        "-q",
    ]
    code, out, err = run(capsys, *args, "--format", "json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert [e["episode"] for e in data["episodes"]] == [0, 1]
    assert data["assignments"] == [
        {"mission": "harvest.open+small", "agents": 4, "per_policy": {"random": 2, "greedy": 2}}
    ]
    import yaml

    code, out, _ = run(capsys, *args, "--format", "yaml")
    assert code == 0 and yaml.safe_load(out) == data


def test_tables_status_and_run_alias(capsys):
    code, out, err = run(
        capsys, "run", "-m", "delivery.open", "-p", "greedy", "-e", "1", "-s", "10"
    )
    assert code == 0
    for title in (
        "Policy assignments",
        "Average game stats",
        "Average per-policy stats",
        "Reward per agent, per episode and policy",
    ):
        assert title in out
    assert "1 episodes, 10 steps in" in err


def test_no_arguments_runs_the_default_job(capsys, monkeypatch):
    monkeypatch.setattr("cogames_parallel.cli.DEFAULT_MISSIONS", ["harvest.open"])
    # without upstream CoGames the default job is ours (with it: test_upstream.py)
    monkeypatch.setattr("cogames_parallel.upstream.installed", lambda: False)
    code, out, err = run(capsys)
    assert code == 0
    assert "1 mission(s) x 10 episodes = 10 episodes" in err and "greedy" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["eval", "-m", "nope"],
            "cogames: error: no mission matches 'nope'; run `cogames missions`",
        ),
        (["eval", "-m", "harvest.open", "-p", "class=x,bad=1"], "unknown key 'bad'"),
        (["eval", "-m", "harvest.open", "-p", "nosuch"], "unknown policy 'nosuch'"),
        (["eval", "-m", "harvest.open", "-e", "-1"], "--episodes must be >= 0"),
        (["eval", "-m", "harvest.open", "-v", "huge"], "has no variant 'huge'"),
        (["eval", "-m", "harvest.open", "-c", "0"], "--cogs must be >= 1"),
        (["eval", "-m", "harvest.open", "--seed", "-1"], "--seed must be >= 0"),
        (["eval", "-m", "harvest.open", "--map-seed", "-1"], "--map-seed must be >= 0"),
        (["eval", "-m", "harvest.open", "-p", "class=random,kw.foo=1"], "RandomPolicy takes no options, got kw.foo"),
        (["eval", "-m", "harvest.open", "-p", "greedy:-1"], "proportion must be > 0"),
        (["eval", "-o", "."], "-o/--output . is a directory"),
        (["eval", "--save-replay-dir", __file__], "exists and is not a directory"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_unknown_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_failed_episodes_exit_1_and_are_named(capsys, helpers):
    code, out, err = run(
        capsys,
        "eval",
        "-m",
        "harvest.open",
        "-p",
        f"class={helpers}:CrashPolicy,kw.at=2",
        "-e",
        "2",
        "-s",
        "5",
        "-q",
        "--format",
        "json",
    )
    assert code == 1
    assert [f["episode"] for f in json.loads(out)["failed"]] == [0, 1]
    assert err.startswith(
        "cogames: error: 2 of 2 episodes failed; first: harvest.open episode 0: policy CrashPolicy"
    )


def test_listing_commands(capsys):
    code, out, _ = run(capsys, "missions")
    assert code == 0 and "assembly.trio" in out and "scarce" in out
    code, out, _ = run(capsys, "policies")
    assert code == 0 and all(n in out for n in ("random", "noop", "greedy", "busy", "mlp"))


def test_output_file_and_replays(capsys, tmp_path):
    out_file = tmp_path / "res.json"
    code, out, _ = run(
        capsys,
        "eval",
        "-m",
        "harvest.open",
        "-p",
        "greedy",
        "-e",
        "2",
        "-s",
        "6",
        "-q",
        "--format",
        "json",
        "-o",
        str(out_file),
        "--save-replay-dir",
        str(tmp_path / "rep"),
    )
    assert code == 0 and out_file.read_text() == out
    replays = sorted((tmp_path / "rep").iterdir())
    assert [p.name for p in replays] == ["harvest.open.ep0000.json", "harvest.open.ep0001.json"]
    rep = json.loads(replays[1].read_text())
    assert len(rep["actions"]) == 6 and rep["policies"] == ["greedy"] * 4
    assert sum(map(sum, rep["rewards"])) == sum(json.loads(out)["episodes"][1]["rewards"])
