"""Results never depend on how the work was parallelised."""

import pytest

from cogames_parallel.evaluate import evaluate, make_plan
from cogames_parallel.report import to_json
from cogames_parallel.runners import MPIRunner, ProcessRunner, SerialRunner
from cogames_parallel.summary import summarize
from cogames_parallel.tasks import plan_tasks

MISSIONS = ["harvest.open", "assembly.pairs"]
POLICIES = ["random", "greedy:2", "class=busy,kw.work=50"]
KW = dict(variants=["small"], steps=25, episodes=3, seed=11, action_timeout_ms=0)


@pytest.fixture(scope="module")
def serial_json():
    return to_json(evaluate(MISSIONS, POLICIES, jobs=0, **KW))


@pytest.mark.parametrize(
    "jobs, parallel_policy, agent_workers",
    [(2, False, None), (2, True, None), (2, True, 1), (0, True, None)],
)
def test_json_is_identical_for_every_parallel_setting(
    serial_json, jobs, parallel_policy, agent_workers
):
    data = evaluate(
        MISSIONS,
        POLICIES,
        jobs=jobs,
        parallel_policy=parallel_policy,
        agent_workers=agent_workers,
        **KW,
    )
    assert to_json(data) == serial_json


def _json_with(runner):
    plan = make_plan(MISSIONS, POLICIES, **KW)
    results = runner.run(plan.tasks)
    return to_json(summarize(plan.missions, plan.policies, plan.tasks, results, plan.config))


def test_nested_episode_and_agent_workers_match_serial(serial_json):
    # 2 episode workers x 2 agent workers each, bypassing the budget (2 cores here)
    assert _json_with(ProcessRunner(2, agent_workers=2)) == serial_json
    assert _json_with(ProcessRunner(3, agent_workers=1)) == serial_json


def test_serial_runner_with_agent_workers_matches(serial_json):
    assert _json_with(SerialRunner(agent_workers=3)) == serial_json


def test_mpi_runner_on_a_local_context_matches(serial_json):
    from parallel_core.mpi import LocalContext

    assert _json_with(MPIRunner(LocalContext(), SerialRunner())) == serial_json


def test_seed_plan_is_reproducible_and_sensitive():
    plan = make_plan(["harvest.open"], ["random", "greedy"], episodes=6, seed=3)
    again = plan_tasks(plan.missions, plan.policies, 6, 3, action_timeout_ms=250)
    assert plan.tasks == again
    other = plan_tasks(plan.missions, plan.policies, 6, 4)
    assert [t.env_seed for t in other] != [t.env_seed for t in plan.tasks]
    # every agent has its own stream, and the seeds are distinct across all tasks
    seeds = [s for t in plan.tasks for s in t.agent_seeds]
    assert len(set(seeds)) == len(seeds)
    # assignments keep the largest-remainder counts but shuffle between episodes
    assert all(sorted(t.assignment) == [0, 0, 1, 1] for t in plan.tasks)
    assert len({t.assignment for t in plan.tasks}) > 1


def test_episode_count_and_mission_order_do_not_change_earlier_episodes():
    a = make_plan(["harvest.open", "delivery.open"], ["random"], episodes=2, seed=5).tasks
    b = make_plan(["harvest.open", "delivery.open"], ["random"], episodes=4, seed=5).tasks
    # episode e of mission m keeps its seeds when more episodes are asked for
    assert a[0].env_seed == b[0].env_seed and a[1].agent_seeds == b[1].agent_seeds


def test_greedy_is_clearly_better_than_random():
    data = evaluate(
        ["harvest.open", "delivery.open", "assembly.pairs"],
        ["random", "greedy"],
        episodes=3,
        steps=80,
        seed=1,
        action_timeout_ms=0,
    )
    for mission, ps in data["policy_stats"].items():
        assert ps["greedy"]["mean_reward"] > 2 * ps["random"]["mean_reward"] + 0.5, mission


def test_worker_layout_splits_the_budget(monkeypatch):
    from cogames_parallel.evaluate import worker_layout
    from parallel_core.budget import available_cores

    monkeypatch.setenv("PARALLEL_CORE_MAX_WORKERS", "2")
    if available_cores() < 2:
        pytest.skip("needs 2 cores")

    def shape(*a, **k):
        lay = worker_layout(*a, **k)
        return lay.episode_workers, lay.agent_workers

    assert shape(0, 8, 4, False) == (1, 1)
    assert shape(2, 8, 4, False) == (2, 1)
    assert shape(2, 1, 4, False) == (1, 1)  # one task cannot use two episode workers
    assert shape(2, 8, 4, True) == (1, 2)  # --parallel-policy serves the agent level first
    assert shape(2, 8, 4, True, agent_workers=1) == (2, 1)
    assert shape(2, 8, 1, True) == (2, 1)  # a single agent: episodes get the budget
    capped = worker_layout(16, 8, 4, False)
    assert (capped.episode_workers, capped.budget) == (2, 2)
    assert capped.notes == ["--jobs 16 capped to the 2 cores available"]
    assert worker_layout(0, 8, 4, True).notes == [
        "--parallel-policy needs --jobs >= 2; running agents in-process"
    ]
