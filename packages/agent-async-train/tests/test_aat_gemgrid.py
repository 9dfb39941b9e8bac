import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from agent_async_train.games import (
    GameError,
    GemGrid,
    GemGridParallelEnv,
    PettingZooGame,
    make_game,
)
from agent_async_train.games.gemgrid import CHANNELS


def naive_obs(game: GemGrid) -> np.ndarray:
    """Per-agent, per-cell reference for the vectorised observe()."""
    r, s = game.view_radius, game.size
    out = []
    for i, (y, x) in enumerate(game.pos):
        view = np.zeros((len(CHANNELS), 2 * r + 1, 2 * r + 1), dtype=np.uint8)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                yy, xx = y + dy, x + dx
                inside = 0 <= yy < s and 0 <= xx < s
                view[0, dy + r, dx + r] = (not inside) or game.wall[yy, xx]
                view[1, dy + r, dx + r] = inside and game.gem[yy, xx]
                others = [j for j, p in enumerate(game.pos) if j != i and tuple(p) == (yy, xx)]
                view[2, dy + r, dx + r] = bool(others)
        out.append(view.reshape(-1))
    return np.stack(out)


@pytest.mark.parametrize("execution", ["simultaneous", "sequential"])
def test_vectorised_observations_match_reference(execution):
    game = GemGrid(num_agents=4, size=8, gems=5, walls=4, view_radius=2, execution=execution)
    rng = np.random.default_rng(0)
    obs = game.reset(seed=3)
    assert obs.shape == (4, game.obs_dim) and obs.dtype == np.uint8
    for _ in range(60):
        np.testing.assert_array_equal(obs, naive_obs(game))
        res = game.step(rng.integers(0, 5, size=4))
        obs = res.obs
        if res.done:
            obs = game.reset()


def test_invariants_truncation_and_gem_count():
    game = GemGrid(num_agents=4, gems=6, max_turns=30, seed=1)
    game.reset()
    rng = np.random.default_rng(1)
    total = 0.0
    for t in range(30):
        res = game.step(rng.integers(0, 5, size=4))
        total += res.rewards.sum()
        cells = {tuple(p) for p in game.pos}
        assert len(cells) == 4, "two agents share a cell"
        assert not game.wall[game.pos[:, 0], game.pos[:, 1]].any()
        # on-board gems + gems waiting to respawn is constant
        assert game.gem.sum() + (game.respawn_at >= 0).sum() == 6
        assert not res.terminated.any()
        assert res.truncated.all() == (t == 29)
    assert res.done and total > 0


def test_simultaneous_conflicts_block_both_and_sequential_lets_first_move():
    # Two agents aim at the same free cell from both sides.
    for execution, expect in (("simultaneous", [(2, 1), (2, 3)]), ("sequential", [(2, 2), (2, 3)])):
        game = GemGrid(num_agents=2, size=5, gems=0, walls=0, execution=execution)
        game.reset(seed=0)
        game.pos = np.array([[2, 1], [2, 3]])
        game.step(np.array([4, 3]))  # right, left
        assert [tuple(p) for p in game.pos] == expect, execution


def test_state_roundtrip_replays_identically():
    game = GemGrid(seed=5)
    game.reset()
    acts = np.random.default_rng(2).integers(0, 5, size=(40, 4))
    for a in acts[:10]:
        game.step(a)
    state = game.get_state()
    first = [game.step(a).obs for a in acts[10:]]
    game.set_state(state)
    second = [game.step(a).obs for a in acts[10:]]
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


def test_pettingzoo_adapter_matches_native_game():
    parallel_api_test(GemGridParallelEnv(num_agents=3, size=7, gems=3, walls=2), num_cycles=50)
    native = GemGrid(num_agents=3, size=7, gems=3, walls=2, max_turns=15)
    wrapped = PettingZooGame(
        GemGridParallelEnv(num_agents=3, size=7, gems=3, walls=2, max_turns=15)
    )
    assert (wrapped.obs_dim, wrapped.num_actions) == (native.obs_dim, native.num_actions)
    np.testing.assert_array_equal(native.reset(seed=9), wrapped.reset(seed=9))
    rng = np.random.default_rng(0)
    while True:
        a = rng.integers(0, 5, size=3)
        r1, r2 = native.step(a), wrapped.step(a)
        np.testing.assert_array_equal(r1.obs, r2.obs)
        np.testing.assert_array_equal(r1.rewards, r2.rewards)
        np.testing.assert_array_equal(r1.truncated, r2.truncated)
        if r1.done:
            assert r2.done
            break


def test_registry_errors_are_clear():
    with pytest.raises(GameError, match="unknown game 'nope'"):
        make_game("nope")
    with pytest.raises(GameError, match="cannot import game module"):
        make_game("no_such_module_xyz:make")
    with pytest.raises(GameError, match="do not fit"):
        GemGrid(size=4, gems=10)
    game = make_game("agent_async_train.games.pettingzoo_adapter:GemGridParallelEnv", num_agents=2)
    assert isinstance(game, PettingZooGame) and game.num_agents == 2


def test_pursuit_is_built_with_the_requested_pursuers_and_names_its_reward():
    pytest.importorskip("pygame")  # PettingZoo's pursuit imports it (the `pursuit` extra)
    game = make_game("pursuit", agents=3, max_cycles=20)
    assert game.num_agents == 3 and game.reward_name == "pursuit reward"
    obs = game.reset(seed=0)
    assert obs.shape == (3, game.obs_dim) and game.num_actions == 5
    res = game.step(np.zeros(3, dtype=np.int64))
    assert res.rewards.shape == (3,)


def test_gemgrid_names_its_reward_and_honours_agents():
    game = make_game("gemgrid", agents=6, size=9)
    assert game.num_agents == 6 and game.reward_name == "gems"
