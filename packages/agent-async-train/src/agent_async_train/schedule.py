"""When to train: the replay-ratio schedule shared by the synchronous loop and the learner thread."""

from __future__ import annotations

import math


class UpdateSchedule:
    """How many training rounds (one update per agent each) are allowed after ``env_steps``.

    Credits are granted at multiples of ``train_interval`` environment steps, once
    ``learning_starts`` steps have been collected::

        allowed(s) = floor((s - s % train_interval - learning_starts) * replay_ratio)

    The synchronous loop trains exactly ``allowed(s) - done`` rounds at each boundary; the
    background learner may train up to ``allowed(s)`` but never beyond, and the collector
    waits while the learner is more than ``slack`` rounds behind. So both modes do the same
    number of updates per environment step, however fast the learner thread happens to be.
    """

    def __init__(self, replay_ratio: float, train_interval: int, learning_starts: int):
        self.replay_ratio = replay_ratio
        self.train_interval = train_interval
        self.learning_starts = learning_starts
        # The learner may lag at most one interval's worth of rounds behind the collector.
        self.slack = max(1, math.ceil(replay_ratio * train_interval))

    def allowed(self, env_steps: int) -> int:
        s = env_steps - env_steps % self.train_interval - self.learning_starts
        if s <= 0:
            return 0
        # The epsilon guards against 0.1 * 30 = 2.9999999999999996 style rounding.
        return int(math.floor(s * self.replay_ratio + 1e-9))

    def is_boundary(self, env_steps: int) -> bool:
        return env_steps % self.train_interval == 0


def epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """Linear epsilon decay from ``start`` to ``end`` over ``decay_steps`` environment steps."""
    if decay_steps <= 0 or step >= decay_steps:
        return end
    return start + (end - start) * step / decay_steps
