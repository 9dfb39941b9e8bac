import numpy as np
import pytest

from cogames_parallel.missions import BUILTIN_MISSIONS
from cogames_parallel.policies import PolicyEnvInfo, PolicyError, PolicySpec, build_policy


def env_info(name="harvest.open", variants=()):
    env = BUILTIN_MISSIONS[name].with_variants(variants).make_env()
    a = env.possible_agents[0]
    return PolicyEnvInfo(
        name, env.observation_space(a), env.action_space(a), len(env.possible_agents)
    ), env


def test_mlp_round_trip_batched_equals_single(tmp_path):
    torch = pytest.importorskip("torch")
    from cogames_parallel.policies.mlp import behaviour_clone, save_mlp

    info, env = env_info()
    obs, _ = env.reset(seed=0)
    x = np.stack(list(obs.values()))
    y = np.array([1, 2, 3, 4])
    net, acc = behaviour_clone(x, y, 5, hidden=16, epochs=200, seed=0)
    assert acc == 1.0  # four points are easy to fit
    path = tmp_path / "w.pt"
    save_mlp(path, net, x.shape[1], 16, 5)
    policy = build_policy(PolicySpec("mlp", data=str(path)), info)
    agents = [policy.agent_policy(i) for i in range(4)]
    batched = policy.step_batch(agents, x)
    single = [a.step(o) for a, o in zip(agents, x)]
    assert list(batched) == single == [1, 2, 3, 4]
    assert torch.get_num_threads() == 1
    # weights trained for another observation size are refused with a clear message
    info_big, _ = env_info("harvest.open")
    info_big = PolicyEnvInfo(
        "other", type(info.observation_space)(-1, 1, (10,)), info.action_space, 4
    )
    with pytest.raises(PolicyError, match="was trained for obs_dim=200"):
        build_policy(PolicySpec("mlp", data=str(path)), info_big)


def test_mlp_without_weights_says_how_to_get_them():
    pytest.importorskip("torch")
    info, _ = env_info()
    policy = build_policy(PolicySpec("mlp"), info)
    with pytest.raises(PolicyError, match="cogames imitate"):
        policy.agent_policy(0)


def test_builtin_policies_take_no_data_and_busy_is_deterministic():
    info, env = env_info()
    with pytest.raises(PolicyError, match="takes no data file"):
        build_policy(PolicySpec("random", data=__file__), info)
    busy = build_policy(PolicySpec("busy", kwargs=(("work", 100),)), info)
    obs, _ = env.reset(seed=1)
    o = obs["agent_0"]
    assert busy.agent_policy(0).step(o) == busy.agent_policy(1).step(o)
    with pytest.raises(PolicyError, match="kw.work must be >= 0"):
        build_policy(PolicySpec("busy", kwargs=(("work", -1),)), info)
