"""Tiny hand-made world models (the EMPO protocol, nothing from the package) for exact tests.

States are ``(step, ...)`` tuples; ``max_steps`` ends every world.
"""

from __future__ import annotations

import os


class Space:
    def __init__(self, n):
        self.n = n


class Goal:
    """Agent ``h`` is at ``place`` (state = (step, place_0, place_1, ...))."""

    def __init__(self, h, place):
        self.h, self.place = h, place

    def is_achieved(self, state):
        return int(state[1 + self.h] == self.place)

    def __eq__(self, other):
        return isinstance(other, Goal) and (self.h, self.place) == (other.h, other.place)

    def __hash__(self):
        return hash((self.h, self.place))

    def __repr__(self):
        return f"Goal({self.h}, {self.place!r})"


class Goals:
    def __init__(self, places):
        self.places = places

    def generate(self, state, h):
        for p in self.places:
            yield Goal(h, p), 1.0


class ChainWorld:
    """One walker per agent on a line of places 0..L; agent actions: 0 stay, 1 forward, 2 forward.

    ``rule(state, actions) -> list[(prob, new_places)]`` customises the dynamics.
    """

    def __init__(self, n_agents=1, n_actions=2, max_steps=1, humans=(0,), robots=(), rule=None):
        self.agents = list(range(n_agents))
        self.action_space = Space(n_actions)
        self.human_agent_indices = list(humans)
        self.robot_agent_indices = list(robots)
        self.max_steps = max_steps
        self.rule = rule or self.default_rule
        self._s = self.reset()

    @staticmethod
    def default_rule(places, actions):
        return [(1.0, tuple(p + (1 if a > 0 else 0) for p, a in zip(places, actions)))]

    def reset(self, *a, **k):
        self._s = (0,) + (0,) * len(self.agents)
        return self._s

    def get_state(self):
        return self._s

    def set_state(self, s):
        self._s = s

    def transition_probabilities(self, state, actions):
        if state[0] >= self.max_steps:
            return None
        return [
            (p, (state[0] + 1, *places), *rest)
            for p, places, *rest in self.rule(state[1:], list(actions))
        ]


def robot_blocks(places, actions):
    """Human 0 moves forward unless robot 1 takes action 1 ("block")."""
    h, r = places
    moved = actions[0] == 1 and actions[1] == 0
    return [(1.0, (h + moved, r))]


def needs_partner_still(places, actions):
    """Human 0 moves forward only if human 1 stays; human 1 moves forward only if human 0 stays."""
    a0, a1 = actions
    return [(1.0, (places[0] + (a0 == 1 and a1 == 0), places[1] + (a1 == 1 and a0 == 0)))]


def coin(places, actions):
    """Forward succeeds with probability 0.25."""
    if actions[0] == 1:
        return [(0.25, (places[0] + 1,)), (0.75, (places[0],))]
    return [(1.0, (places[0],))]


def slow_forward(places, actions):
    """Forward takes 2 time units (discounted twice), staying takes 1."""
    if actions[0] == 1:
        return [(1.0, (places[0] + 1,), 2.0)]
    return [(1.0, (places[0],), 1.0)]


class NoClockWorld(ChainWorld):
    """A DAG without a step counter: states ('n', k) jump forward by 1 or 2 up to 4."""

    def reset(self, *a, **k):
        self._s = ("n", 0)
        return self._s

    def transition_probabilities(self, state, actions):
        k = state[1]
        if k >= 4:
            return None
        return [(1.0, ("n", min(4, k + 1 + actions[0])))]


# --- factories for the CLI (``--world tests/empo_test_worlds.py:NAME``) ----------------------
class CyclicWorld(ChainWorld):
    """No step counter: two states that lead to each other."""

    def reset(self, *a, **k):
        self._s = ("a",)
        return self._s

    def transition_probabilities(self, state, actions):
        return [(1.0, ("b",) if state == ("a",) else ("a",))]

    def goal_generator(self):
        return Goals(["a"])


class BadProbWorld(ChainWorld):
    def transition_probabilities(self, state, actions):
        if state[0] >= self.max_steps:
            return None
        return [(0.5, (state[0] + 1, 0)), (0.3, (state[0] + 1, 1))]

    def goal_generator(self):
        return Goals([1])


class DyingRankWorld(ChainWorld):
    """Rank 1 of an MPI job dies abruptly (like a node failure) while expanding the DAG."""

    def transition_probabilities(self, state, actions):
        if os.environ.get("PMI_RANK") == "1" and state[0] >= 1:
            os._exit(7)
        return super().transition_probabilities(state, actions)

    def goal_generator(self):
        return Goals([1, 2])


def make_cyclic():
    return CyclicWorld()


def make_bad_prob():
    return BadProbWorld(max_steps=2)


def make_dying(max_steps=None):
    return DyingRankWorld(
        n_agents=2, n_actions=3, humans=(0,), robots=(1,), max_steps=max_steps or 6
    )


class InterruptedWorld(ChainWorld):
    """The user presses Ctrl-C while the DAG is being built (SIGINT to this process)."""

    def transition_probabilities(self, state, actions):
        if state[0] >= 1:
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return super().transition_probabilities(state, actions)

    def goal_generator(self):
        return Goals([1])


def make_interrupted():
    return InterruptedWorld(max_steps=3)


# --- worlds of each kind upstream EMPO handles (issue 12 item 1); reference numbers in
# test_upstream_exact.py were computed by upstream EMPO on these very objects -------------
def interfering_robot(places, actions):
    """Human 0 (actions: 0 stay, 1 step, 2 jump two places); robot 1 (0 stay, 1 step, 2 interfere).

    An interfering robot makes the human's move fail with probability 1/2.
    """
    h, r = places
    a_h, a_r = actions
    if a_h == 0:
        return [(1.0, (h, r + (a_r == 1)))]
    step = 1 if a_h == 1 else 2
    if a_r == 2:
        return [(0.5, (h + step, r)), (0.5, (h, r))]
    return [(1.0, (h + step, r + (a_r == 1)))]


class DurationWorld(ChainWorld):
    """Durations through EMPO's ``transition_durations``: a jump takes longer, interference too."""

    def __init__(self, max_steps=3):
        super().__init__(
            n_agents=2, n_actions=3, humans=(0,), robots=(1,), max_steps=max_steps,
            rule=interfering_robot,
        )

    def transition_durations(self, state, actions, transitions):
        return [1.0 + 0.5 * (s2[1] - state[1]) + 0.25 * (actions[1] == 2) for _, s2 in transitions]

    def goal_generator(self):
        return Goals([1, 2, 3])


class GoalsAhead:
    """Goals that depend on the state: reach the next place (weight 2) or the one after (1)."""

    def generate(self, state, h):
        here = state[1 + h]
        yield Goal(h, here + 1), 2.0
        yield Goal(h, here + 2), 1.0


def two_humans_one_robot(places, actions):
    """Humans 0 and 1 step forward on action 1; moving together, each fails with 1/2 (one
    of them gets through); robot 2 on action 1 holds human 1 back."""
    h0, h1, r = places
    a0, a1, ar = actions
    go1 = a1 == 1 and ar == 0
    if a0 == 1 and go1:
        return [(0.5, (h0 + 1, h1, r)), (0.5, (h0, h1 + 1, r))]
    return [(1.0, (h0 + (a0 == 1), h1 + go1, r + (ar == 1)))]


def make_duration_world(max_steps=None):
    return DurationWorld(max_steps=max_steps or 3)


class GoalsAheadWorld(ChainWorld):
    def goal_generator(self):
        return GoalsAhead()


def make_goals_ahead_world():
    return GoalsAheadWorld(
        n_agents=2, n_actions=3, humans=(0,), robots=(1,), max_steps=3, rule=interfering_robot
    )


class TwoHumansWorld(ChainWorld):
    def goal_generator(self):
        return Goals([1, 2])


def make_two_humans_world():
    return TwoHumansWorld(
        n_agents=3, n_actions=2, humans=(0, 1), robots=(2,), max_steps=3, rule=two_humans_one_robot
    )


class GymLikeWorld(TwoHumansWorld):
    """Like a gymnasium env built without a registry entry: ``spec`` is None, and the goals
    come from EMPO's ``possible_goal_generator`` attribute (no ``goal_generator()``)."""

    spec = None
    goal_generator = None  # hide TwoHumansWorld's method: the CLI must use the attribute

    @property
    def possible_goal_generator(self):
        return Goals([1, 2])


def make_gym_like():
    return GymLikeWorld(
        n_agents=3, n_actions=2, humans=(0, 1), robots=(2,), max_steps=3, rule=two_humans_one_robot
    )
