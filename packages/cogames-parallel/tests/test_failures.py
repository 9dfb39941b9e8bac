"""Crashing policies, dying workers, timeouts, unpicklable policies: reported, never zeroed."""

import time

import pytest

from cogames_parallel.evaluate import evaluate, make_plan
from cogames_parallel.policies import MultiAgentPolicy, register_policy
from cogames_parallel.policies.builtin import _NoopAgent
from cogames_parallel.report import to_json

KW = dict(variants=["small"], steps=20, episodes=3, seed=2, action_timeout_ms=0)


@pytest.mark.parametrize("jobs, pp", [(0, False), (2, False), (2, True)])
def test_crashing_policy_fails_its_episodes_by_name(helpers, jobs, pp):
    data = evaluate(
        ["harvest.open"],
        ["random", f"class={helpers}:CrashPolicy,kw.at=3"],
        jobs=jobs,
        parallel_policy=pp,
        **KW,
    )
    assert [f["episode"] for f in data["failed"]] == [0, 1, 2]
    for f in data["failed"]:
        assert "policy CrashPolicy raised on agent" in f["error"]
        assert f["error"].endswith("ValueError: boom at step 3")
    assert all(ep["status"] == "failed" and "rewards" not in ep for ep in data["episodes"])
    assert data["game_stats"]["harvest.open+small"]["episodes_ok"] == 0


def test_dying_episode_worker_fails_only_its_episode(helpers):
    # agents whose seed % 5 == 0 exit their process at step 2: exactly those episodes fail
    spec = f"class={helpers}:DiePolicy,kw.at=2,kw.mod=5"
    kw = {**KW, "episodes": 8}
    plan = make_plan(["harvest.open"], [spec], **kw)
    doomed = [t.episode for t in plan.tasks if any(s % 5 == 0 for s in t.agent_seeds)]
    assert 0 < len(doomed) < 8  # the seed gives a mix of dying and healthy episodes
    data = evaluate(["harvest.open"], [spec], jobs=2, **kw)
    assert [f["episode"] for f in data["failed"]] == doomed
    assert all(
        f["error"] == "worker process exited with code 7 during this episode"
        for f in data["failed"]
    )
    healthy = [ep for ep in data["episodes"] if ep["episode"] not in doomed]
    assert healthy and all(ep["status"] == "ok" and ep["steps"] == 20 for ep in healthy)


def test_dying_agent_worker_is_reported(helpers):
    data = evaluate(
        ["harvest.open"],
        ["random", f"class={helpers}:DiePolicy,kw.at=2"],
        jobs=2,
        parallel_policy=True,
        **KW,
    )
    assert len(data["failed"]) == 3
    assert all(
        "agent worker" in f["error"] and "exited with code 7" in f["error"] for f in data["failed"]
    )


@pytest.mark.parametrize("jobs, pp", [(0, False), (2, True)])
def test_timeouts_become_noops_and_are_counted(helpers, jobs, pp):
    # sleeps 60 ms on every 5th step; timeout 30 ms -> 4 timeouts per agent in 20 steps
    slow = f"class={helpers}:SlowPolicy,kw.ms=60,kw.every=5"
    data = evaluate(
        ["harvest.open"],
        [slow],
        jobs=jobs,
        parallel_policy=pp,
        **{**KW, "action_timeout_ms": 30, "episodes": 1},
    )
    ps = data["policy_stats"]["harvest.open+small"]["SlowPolicy"]
    assert ps["timeouts"] >= 4 * 4  # 4 agents; a loaded machine may add more, never fewer
    assert data["failed"] == []
    off = evaluate(["harvest.open"], [slow], **{**KW, "episodes": 1, "steps": 6})
    assert off["policy_stats"]["harvest.open+small"]["SlowPolicy"]["timeouts"] == 0


def test_unpicklable_policy_falls_back_in_process_with_one_warning(capsys):
    class LocalNoop(MultiAgentPolicy):  # defined in a function: cannot be pickled
        def agent_policy(self, agent_id):
            return _NoopAgent()

    register_policy("localnoop", LocalNoop)
    serial = evaluate(["harvest.open"], ["localnoop", "random"], jobs=0, **KW)
    capsys.readouterr()
    par = evaluate(["harvest.open"], ["localnoop", "random"], jobs=2, parallel_policy=True, **KW)
    err = capsys.readouterr().err
    assert to_json(par) == to_json(serial)
    assert err.count("cannot run in a worker process") == 1
    assert "policy localnoop cannot run in a worker process (it cannot be pickled" in err


def test_worker_safe_false_policy_stays_in_process(helpers, capsys):
    spec = f"class={helpers}:MainOnlyPolicy"
    serial = evaluate(["harvest.open"], [spec], jobs=0, **KW)
    par = evaluate(["harvest.open"], [spec], jobs=2, **KW)
    assert "MainOnlyPolicy sets worker_safe = False" in capsys.readouterr().err
    assert to_json(par) == to_json(serial) and par["failed"] == []


def test_hung_policy_on_agent_workers_is_preempted_and_fails_its_episode(helpers):
    # sleeps 60 s at step 2 of every episode: the agent worker pre-empts the call after
    # 20 x the 100 ms action timeout (2 s), the episode fails with that message, and the
    # next episode runs on the same workers
    t0 = time.perf_counter()
    data = evaluate(
        ["harvest.open"],
        ["random", f"class={helpers}:SlowPolicy,kw.ms=60000,kw.every=2"],
        jobs=2,
        parallel_policy=True,
        **{**KW, "steps": 3, "action_timeout_ms": 100},
    )
    assert time.perf_counter() - t0 < 30
    assert len(data["failed"]) == 3
    assert all("did not return an action" in f["error"] for f in data["failed"])


@pytest.mark.parametrize("jobs, pp", [(0, False), (2, True)])
def test_only_the_slow_agent_is_charged_timeouts(helpers, jobs, pp):
    # agent 0 takes 1.2 s per action, the others microseconds; timeout 0.5 s. With two
    # agents per agent worker, agent 1 waits behind agent 0 but must not be charged.
    data = evaluate(
        ["harvest.open"],
        [f"class={helpers}:SlowPolicy,kw.ms=1200,kw.agent=0"],
        jobs=jobs,
        parallel_policy=pp,
        agent_workers=2 if pp else None,
        **{**KW, "steps": 3, "episodes": 1, "action_timeout_ms": 500},
    )
    (ep,) = data["episodes"]
    assert ep["status"] == "ok" and ep["timeouts"] == [3, 0, 0, 0]
