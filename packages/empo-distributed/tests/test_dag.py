"""The DAG: EMPO-compatible lists, CSR arrays, canonical order, errors."""

import numpy as np
import pytest
from empo_test_worlds import BadProbWorld, ChainWorld, CyclicWorld, NoClockWorld, coin

from empo_distributed import WorldError, build_dag, get_dag, joint_actions, load_world
from empo_distributed.levels import dependency_levels


def test_joint_action_index_agent0_least_significant():
    joint = joint_actions(2, 3)
    assert joint[1] == [1, 0] and joint[3] == [0, 1] and joint[5] == [2, 1]
    assert all(k == a0 + 3 * a1 for k, (a0, a1) in enumerate(joint))


def test_get_dag_compat_lists():
    world = ChainWorld(max_steps=2, rule=coin)
    states, state_to_idx, successors, transitions = get_dag(world, return_probabilities=True)
    assert states == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert states == sorted(states) and state_to_idx[(1, 1)] == 2
    assert successors[0] == [1, 2]
    # joint action (1,) from the root: forward succeeds with 0.25
    assert transitions[0][1] == ((1,), [0.25, 0.75], [2, 1])
    assert transitions[0][0] == ((0,), [1.0], [1])
    assert transitions[3] == []  # terminal


def test_gridworld_dag_is_sorted_and_consistent():
    world = load_world("contest")
    dag = build_dag(world)
    assert dag.step_layered and dag.states[0] == world.reset()
    assert dag.states == sorted(dag.states)
    K = dag.num_joint_actions
    per_sk = np.add.reduceat(dag.probs, dag.sk_offsets[:-1][np.diff(dag.sk_offsets) > 0])
    np.testing.assert_allclose(per_sk, 1.0, atol=1e-12)
    for i in np.flatnonzero(~dag.terminal)[:20]:  # CSR agrees with the world model
        for k, actions in enumerate(joint_actions(dag.num_agents, dag.num_actions)):
            p, s = dag.outcomes(i, k)
            want = world.transition_probabilities(dag.states[i], actions)
            assert [(float(a), dag.states[b]) for a, b in zip(p, s)] == want
    assert np.all(np.diff(dag.sk_offsets).reshape(len(dag), K)[dag.terminal] == 0)


def test_contention_splits_probability():
    world = load_world("contest")
    root = world.reset()
    # human moves right, robot moves left: both want the middle cell
    outs = world.transition_probabilities(root, [4, 3])
    assert [p for p, _ in outs] == [0.5, 0.5]
    assert len({s for _, s in outs}) == 2


def test_kahn_order_without_step_counter():
    world = NoClockWorld(n_actions=2)
    dag = build_dag(world)
    assert not dag.step_layered
    assert dag.states == [("n", 0), ("n", 1), ("n", 2), ("n", 3), ("n", 4)]
    src = np.repeat(np.arange(len(dag)), np.diff(dag.sk_offsets[:: dag.num_joint_actions]))
    assert np.all(dag.succ > src)  # every edge points forward
    levels = dependency_levels(dag)  # height peel-off: terminal first
    assert [lv.tolist() for lv in levels] == [[4], [3], [2], [1], [0]]


def test_height_levels_on_step_world_respect_dependencies():
    dag = build_dag(load_world("tiny"))
    order = np.concatenate(dependency_levels(dag, "height"))
    pos = np.empty(len(dag), dtype=int)
    pos[order] = np.arange(len(dag))
    src = np.repeat(np.arange(len(dag)), np.diff(dag.sk_offsets[:: dag.num_joint_actions]))
    assert np.all(pos[dag.succ] < pos[src])


def test_cyclic_world_is_rejected():
    with pytest.raises(WorldError, match="cyclic"):
        build_dag(CyclicWorld())


def test_bad_probabilities_are_rejected():
    with pytest.raises(WorldError, match="sum to 0.8"):
        build_dag(BadProbWorld(max_steps=2))


def test_max_states_guard():
    with pytest.raises(WorldError, match="more than 50 reachable states"):
        build_dag(load_world("small"), max_states=50)


@pytest.mark.parametrize(
    "text, message",
    [
        ("#####\n#H.X#\n#####\n", "unexpected character"),
        ("#####\n#H..#\n####\n", "different lengths"),
        ("#####\n#...#\n#####\n", "no human"),
        ("max_steps = x\n###\n#H#\n###\n", "max_steps must be an integer"),
        ("colour = red\n###\n#H#\n###\n", "unknown option"),
    ],
)
def test_bad_map_files(tmp_path, text, message):
    path = tmp_path / "bad.map"
    path.write_text(text)
    with pytest.raises(WorldError, match=message):
        load_world(str(path))


def test_map_file_and_unknown_world(tmp_path):
    path = tmp_path / "ok.map"
    path.write_text("; a comment\nmax_steps = 2\n#####\n#HG.#\n#..R#\n#####\n")
    world = load_world(str(path))
    assert (
        world.max_steps == 2
        and world.human_agent_indices == [0]
        and world.robot_agent_indices == [1]
    )
    assert len(build_dag(world)) > 3
    with pytest.raises(WorldError, match="unknown world"):
        load_world("no-such-world")


def test_save_load_with_non_integer_states(tmp_path):
    from empo_test_worlds import Goals

    from empo_distributed import PriorFileError, compute_human_policy_prior, load_prior

    world = NoClockWorld(n_actions=2)
    prior = compute_human_policy_prior(world, [0], Goals([3]), beta_h=float("inf"))
    prior.save(tmp_path / "p.npz")
    with pytest.raises(PriorFileError, match="allow_pickle=True only for a file you trust"):
        load_prior(tmp_path / "p.npz")  # never unpickles unless asked (issue 12 item 5)
    back = load_prior(tmp_path / "p.npz", allow_pickle=True)
    assert back.states == [("n", 0), ("n", 1), ("n", 2), ("n", 3), ("n", 4)]
    assert back.value(("n", 0), 0, 0) == prior.value(("n", 0), 0, 0) == 1.0
    assert back(("n", 4), 0) is None  # terminal


def test_loaded_prior_answers_for_a_fresh_goal_object(tmp_path):
    from empo_distributed import compute_human_policy_prior, load_prior, load_world

    world = load_world("tiny")
    prior = compute_human_policy_prior(world, [0], world.goal_generator())
    prior.save(tmp_path / "p.npz")
    back = load_prior(tmp_path / "p.npz")
    root = back.states[0]
    goals = [g for g, _ in world.goal_generator().generate(root, 0)]  # new objects, no goal_id
    assert goals and all(g.goal_id is None for g in goals)
    for g in goals:
        np.testing.assert_array_equal(back(root, 0, g), prior(root, 0, g))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable prior"),
        (b"garbage that is no zip file at all", "not a readable prior"),
        ("truncated", "not a readable prior"),
        ("other_npz", "is an .npz file but not a prior: it lacks"),
    ],
)
def test_load_prior_rejects_garbage_and_truncated_files(tmp_path, content, message):
    from empo_distributed import PriorFileError, compute_human_policy_prior, load_prior, load_world

    path = tmp_path / "p.npz"
    if content == "truncated":
        world = load_world("tiny")
        compute_human_policy_prior(world, [0], world.goal_generator()).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "other_npz":
        np.savez(path, x=np.arange(3))
    else:
        path.write_bytes(content)
    with pytest.raises(PriorFileError, match=message):
        load_prior(path)


@pytest.mark.parametrize("name, steps", [("contest", None), ("two_humans", 3), ("medium", 5)])
def test_vectorised_dag_equals_the_general_builder(name, steps, monkeypatch):
    """Built-in worlds expand with numpy (issue 12 item 3); the arrays equal the general path's,
    and so do the step levels (from the waves) and the achieved matrix (decoded in chunks)."""
    from empo_distributed import GridWorld, compute_human_policy_prior, load_world
    from empo_distributed.levels import dependency_levels

    monkeypatch.setattr("empo_distributed.solver.ACHIEVED_CHUNK", 7)
    world = load_world(name, steps)
    fast = build_dag(world)
    assert type(fast.states).__name__ == "StateTable"
    fast_prior = compute_human_policy_prior(world, world.human_agent_indices, world.goal_generator(), gamma_h=0.9)
    monkeypatch.setattr(GridWorld, "batch_expansion", False)
    slow = build_dag(world)
    assert isinstance(slow.states, list)
    assert list(fast.states) == slow.states
    for key in ("terminal", "sk_offsets", "probs", "succ"):
        np.testing.assert_array_equal(getattr(fast, key), getattr(slow, key), err_msg=key)
    slow_prior = compute_human_policy_prior(world, world.human_agent_indices, world.goal_generator(), gamma_h=0.9)
    np.testing.assert_array_equal(fast_prior.values, slow_prior.values)
    np.testing.assert_array_equal(fast_prior.policy, slow_prior.policy)
    np.testing.assert_array_equal(fast_prior.achieved, slow_prior.achieved)
    assert fast.wave_bounds is not None and slow.wave_bounds is None
    assert [lv.tolist() for lv in dependency_levels(fast)] == [lv.tolist() for lv in dependency_levels(slow)]
    s = slow.states[len(slow) // 2]
    assert fast.state_to_idx[s] == slow.state_to_idx[s] and fast.states[len(slow) // 2] == s
    with pytest.raises(KeyError):
        fast.state_to_idx[(99, 0, 0)]


def test_list_worlds_state_counts_are_true():
    """``--list-worlds`` shows state counts (issue 12 item 3); giant's is checked by the benchmark."""
    from empo_distributed import list_worlds

    counts = {w["name"]: w["states"] for w in list_worlds()}
    assert counts["giant"] == 1011554 and counts["huge"] == 113900
    for name in ("tiny", "contest", "small", "two_humans", "medium", "large"):
        assert len(build_dag(load_world(name))) == counts[name], name


def test_expand_batch_of_mixed_states_equals_state_by_state():
    """``expand_batch`` on states of different steps (terminal ones among them: the gathers,
    not the all-live slices) gives, state by state, ``transition_probabilities``' outcomes."""
    from empo_distributed import load_world
    from empo_distributed.worlds.gridworld import ACTIONS

    world = load_world("two_humans", 3)
    dag = build_dag(world)
    rows = np.array([dag.states[i] for i in range(0, len(dag), max(1, len(dag) // 40))] + [dag.states[-1]])
    terminal, counts, probs, succ = world.expand_batch(rows)
    codec, nA, A = world.codec(), len(ACTIONS), len(world.agents)
    at = 0
    for row, term, cnt in zip(rows, terminal, counts):
        assert term == (row[0] >= world.max_steps)
        for k in range(nA**A):
            actions = [(k // nA**i) % nA for i in range(A)]
            want = [] if term else world.transition_probabilities(tuple(row), actions)
            assert cnt[k] == len(want)
            for p, s in want:
                assert probs[at] == p and succ[at] == codec.encode(np.array([s]))[0]
                at += 1
    assert at == len(succ) and terminal.any() and not terminal.all()


@pytest.mark.parametrize("span", [50, 10**12])  # dense keys (a table over the range) and sparse ones (sorting)
def test_sorted_unique_and_key_positions_dense_or_not(span):
    from empo_distributed.dag import _SortedIndex, sorted_unique

    rng = np.random.default_rng(span % 97)
    keys = rng.integers(7 * 10**12, 7 * 10**12 + span, size=200, dtype=np.int64)
    unique = sorted_unique(keys)
    np.testing.assert_array_equal(unique, np.unique(keys))
    assert unique.dtype == keys.dtype
    np.testing.assert_array_equal(_SortedIndex(unique)(keys), np.searchsorted(unique, keys))
    np.testing.assert_array_equal(sorted_unique(np.array([0.5, 1.0, 0.5])), [0.5, 1.0])  # floats: sorted


def test_union_of_sorted_key_sets():
    """The ranks' sorted successor keys merged (``union_sorted``): overlapping, disjoint in
    either order, nested, empty, and three of them; always ``np.unique`` of all."""
    from empo_distributed.dag import union_sorted

    rng = np.random.default_rng(5)
    r = lambda lo, hi, n: np.unique(rng.integers(lo, hi, size=n, dtype=np.int64))  # noqa: E731
    cases = [
        [r(0, 100, 60), r(80, 200, 60)],  # overlap at the border (the usual case)
        [r(100, 200, 30), r(0, 90, 30)],  # disjoint, second below the first
        [r(0, 50, 20), r(60, 90, 20)],  # disjoint, in order
        [r(0, 1000, 300), r(400, 500, 50)],  # nested
        [r(0, 10, 5), np.zeros(0, dtype=np.int64)],
        [np.zeros(0, dtype=np.int64), r(0, 10, 5)],
        [r(0, 100, 40), r(50, 150, 40), r(20, 400, 90)],
        [np.array([7]), np.array([7])],
    ]
    for parts in cases:
        got = union_sorted(parts)
        np.testing.assert_array_equal(got, np.unique(np.concatenate(parts)))
        assert got.dtype == np.int64


@pytest.mark.parametrize("first", [1.0, 0.25])  # the common value first, or a rare one
def test_prob_table_ids_and_new_values(first):
    from empo_distributed.dag import ProbTable

    table = ProbTable()
    table.add([0.5, 1.0])
    probs = np.array([first, 1.0, 1.0, 0.5, 1.0, 0.125, 1.0])
    assert table.new_values(probs) == sorted({first, 0.125} - {0.5, 1.0})
    table.add(table.new_values(probs))
    ids = table.index(probs)
    np.testing.assert_array_equal(ids, [table.lookup[x] for x in probs.tolist()])
    assert ids.dtype == np.uint8 and table.index(probs[:0]).dtype == np.uint8
    np.testing.assert_array_equal(table.values()[ids], probs)
