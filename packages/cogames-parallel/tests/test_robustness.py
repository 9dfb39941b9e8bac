"""Robustness found by new users (issue 11, item 5), on our own missions."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from cogames_parallel.cli import main
from cogames_parallel.missions import MissionRef, build_mission
from cogames_parallel.missions.base import MissionError
from cogames_parallel.tasks import plan_tasks


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def envs(monkeypatch):
    from conftest import HERE

    monkeypatch.syspath_prepend(str(HERE))
    return "helper_envs"


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_a_policy_that_never_returns_fails_its_episode_not_the_run(capsys, helpers, jobs):
    t0 = time.perf_counter()
    code, out, err = run(
        capsys, "eval", "-m", "harvest.open", "-v", "small", "-s", "10", "-e", "2", "-q",
        "-p", f"class={helpers}:HangPolicy,kw.at=3", "--action-timeout-ms", "50",
        "--jobs", jobs, "--format", "json",
    )  # fmt: skip
    assert time.perf_counter() - t0 < 30
    data = json.loads(out)
    assert code == 1 and len(data["failed"]) == 2
    assert "did not return an action for agent 0 within 2 s" in data["failed"][0]["error"]
    assert "1 of" not in err and "2 of 2 episodes failed" in err


def test_failed_episode_keeps_a_trimmed_traceback(capsys, helpers):
    code, out, _ = run(
        capsys, "eval", "-m", "harvest.open", "-s", "10", "-e", "1", "-q", "--format", "json",
        "-p", f"class={helpers}:CrashPolicy,kw.at=2",
    )  # fmt: skip
    failed = json.loads(out)["failed"][0]
    assert code == 1 and "Traceback" in failed["traceback"] or failed["traceback"].startswith("...")
    assert "ValueError" in failed["traceback"] and len(failed["traceback"].splitlines()) <= 13


def test_kwargs_only_factories_get_no_undeclared_options(capsys, envs):
    code, out, err = run(capsys, "eval", "-m", f"{envs}:kwargs_only", "-p", "random", "-c", "3")
    assert code == 2 and "does not take num_agents" in err and err.count("\n") == 1
    code, out, err = run(capsys, "eval", "-m", f"{envs}:kwargs_only", "-p", "random",
                         "--map-seed", "1")  # fmt: skip
    assert code == 2 and "does not declare map_seed" in err and err.count("\n") == 1
    # -s is not passed to it either: it only caps the rollout
    code, out, err = run(capsys, "eval", "-m", f"{envs}:kwargs_only", "-p", "random", "-s", "4",
                         "-e", "2", "-q", "--format", "json")  # fmt: skip
    data = json.loads(out)
    assert code == 0 and [e["steps"] for e in data["episodes"]] == [4, 4]


def test_continuous_actions_reach_the_env_as_vectors(capsys, envs, helpers, tmp_path):
    code, out, err = run(
        capsys, "eval", "-m", f"{envs}:continuous", "-p", f"class={helpers}:BoxPolicy",
        "-e", "1", "-q", "--format", "json", "--save-replay-dir", str(tmp_path),
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0, err
    # reward is the first action component: 0.25 and 0.5 per step, 6 steps
    assert sorted(data["episodes"][0]["rewards"]) == [1.5, 3.0]
    (replay,) = tmp_path.glob("*.json")
    assert json.loads(replay.read_text())["actions"][0] in ([[0.25, 0.25], [0.5, 0.5]],
                                                           [[0.5, 0.5], [0.25, 0.25]])  # fmt: skip


def test_a_failing_env_close_keeps_the_finished_episode(capsys, envs):
    code, out, err = run(capsys, "eval", "-m", f"{envs}:close_raises", "-p", "noop", "-e", "2",
                         "--format", "json")  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["failed"] == [] and len(data["episodes"]) == 2
    assert "env.close() raised RuntimeError: close failed; the episode's results are kept" in err


def test_seeds_fit_a_c_int_whatever_the_root_seed():
    ref = MissionRef("builtin", "harvest.open")
    from cogames_parallel.policies import PolicySpec

    tasks = plan_tasks([(ref, build_mission(ref))], [PolicySpec("random")], 3, seed=2**200 + 7)
    seeds = [t.env_seed for t in tasks] + [s for t in tasks for s in t.agent_seeds]
    assert all(0 <= s < 2**31 for s in seeds) and len(set(seeds)) == len(seeds)


def test_huge_values_are_not_copied_into_error_lines(capsys):
    code, out, err = run(capsys, "eval", "-m", "cogames:arena", "--seed", str(10**500))
    if code == 2 and "upstream CoGames" in err:
        pytest.skip("upstream CoGames not installed")
    assert code == 2 and "mettagrid takes a C int" in err and len(err) < 200


def test_kwargs_only_factory_rejects_cogs_in_the_api_too(envs):
    from cogames_parallel.missions.loading import resolve_missions

    (m,) = resolve_missions([f"{envs}:kwargs_only"])
    with pytest.raises(MissionError, match="does not take num_agents"):
        m.with_variants(cogs=3)
    assert np.isscalar(m.with_variants(steps=3).max_steps)
    del sys.modules[envs]
