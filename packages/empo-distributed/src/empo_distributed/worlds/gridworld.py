"""Multi-agent gridworlds: walls, humans, robots, goal cells, contention for free cells.

State: ``(step, pos_0, pos_1, ...)`` with ``pos_i = row * width + col`` of agent i, so
states are flat integer tuples (sortable, cheap to hash, storable as an int array) and
the step count comes first (the solver then groups dependency levels by step).

Dynamics, per step, all agents act at once with the shared action set
``stay/up/down/left/right``:

* an agent's target is the neighbouring cell in its direction, or its own cell for
  ``stay`` or when the neighbour is a wall;
* a move into a cell occupied (before the step) by any agent is blocked;
* agents contending for the same free cell each win it with probability ``1/k``
  (``k`` contenders); the losers stay. Independent contests multiply.

The world ends (terminal state) after ``max_steps`` steps. Goals: "human h stands on
cell c" for every goal cell ``G`` of the map (every free cell when the map has none).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..goals import PossibleGoal, PossibleGoalGenerator
from ..world_model import WorldError

ACTIONS = ("stay", "up", "down", "left", "right")
_DELTAS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
GRID_CHARS = set("#.HRG")


class ActionSpace:
    """Just enough of ``gymnasium.spaces.Discrete``: ``n`` actions."""

    def __init__(self, n: int):
        self.n = n

    def __repr__(self) -> str:
        return f"ActionSpace({self.n})"


@dataclass(frozen=True)
class GridSpec:
    """A parsed map: the grid rows and its options."""

    name: str
    rows: tuple[str, ...]
    max_steps: int
    goals: str = "cells"  # "cells": the G cells (all free cells if none); "all": all free cells


def parse_map(text: str, name: str = "map") -> GridSpec:
    """Parse the map format (see ``docs/empo-distributed.md``); raise ``WorldError`` on bad input.

    ``;`` starts a comment line, ``key = value`` lines set options (``max_steps``,
    ``actions``, ``goals``), the grid is the block of lines made of ``# . H R G``.
    """
    options: dict[str, str] = {}
    rows: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        if "=" in line:
            key, _, value = line.partition("=")
            options[key.strip().lower()] = value.strip()
            continue
        bad = set(line) - GRID_CHARS
        if bad:
            raise WorldError(
                f"{name}: line {lineno}: unexpected character(s) {''.join(sorted(bad))!r}; "
                "grid lines use only '#' wall, '.' floor, 'H' human, 'R' robot, 'G' goal cell"
            )
        rows.append(line)
    if not rows:
        raise WorldError(f"{name}: no grid found; a map needs lines of '# . H R G'")
    if len({len(r) for r in rows}) != 1:
        raise WorldError(
            f"{name}: grid rows have different lengths; pad every row to the same width"
        )
    known = {"max_steps", "actions", "goals", "name"}
    unknown = set(options) - known
    if unknown:
        raise WorldError(f"{name}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    actions = options.get("actions", "/".join(ACTIONS))
    if actions != "/".join(ACTIONS):
        raise WorldError(f"{name}: actions must be {'/'.join(ACTIONS)!r}, got {actions!r}")
    try:
        max_steps = int(options.get("max_steps", "8"))
    except ValueError:
        raise WorldError(
            f"{name}: max_steps must be an integer, got {options['max_steps']!r}"
        ) from None
    if max_steps < 1:
        raise WorldError(f"{name}: max_steps must be >= 1, got {max_steps}")
    goals = options.get("goals", "cells")
    if goals not in ("cells", "all"):
        raise WorldError(f"{name}: goals must be 'cells' or 'all', got {goals!r}")
    text_all = "".join(rows)
    if "H" not in text_all:
        raise WorldError(f"{name}: the map has no human 'H'")
    return GridSpec(options.get("name", name), tuple(rows), max_steps, goals)


class GridWorld:
    """A gridworld implementing the EMPO ``WorldModel`` protocol (see module docstring)."""

    def __init__(self, spec: GridSpec, max_steps: int | None = None):
        self.spec = spec
        self.name = spec.name
        self.max_steps = int(max_steps if max_steps is not None else spec.max_steps)
        if self.max_steps < 1:
            raise WorldError(f"max_steps must be >= 1, got {self.max_steps}")
        self.height = len(spec.rows)
        self.width = len(spec.rows[0])
        cells = "".join(spec.rows)
        self.walls = np.array([ch == "#" for ch in cells])
        start, kinds = [], []
        for i, ch in enumerate(cells):
            if ch in "HR":
                start.append(i)
                kinds.append(ch)
        self.agents = [f"{'human' if k == 'H' else 'robot'}{i}" for i, k in enumerate(kinds)]
        self.human_agent_indices = [i for i, k in enumerate(kinds) if k == "H"]
        self.robot_agent_indices = [i for i, k in enumerate(kinds) if k == "R"]
        self.action_space = ActionSpace(len(ACTIONS))
        free = [i for i, ch in enumerate(cells) if ch != "#"]
        marked = [i for i, ch in enumerate(cells) if ch == "G"]
        self.goal_cells = marked if (marked and spec.goals == "cells") else free
        # move[cell][a]: where action a leads from cell (walls and the border stop you).
        self._move = []
        for i in range(len(cells)):
            r, c = divmod(i, self.width)
            row = []
            for dr, dc in _DELTAS:
                rr, cc = r + dr, c + dc
                j = rr * self.width + cc
                ok = 0 <= rr < self.height and 0 <= cc < self.width and not self.walls[j]
                row.append(j if ok else i)
            self._move.append(tuple(row))
        self._start = (0, *start)
        self._state = self._start

    # --- WorldModel protocol -------------------------------------------------------
    def reset(self, *args, **kwargs):
        self._state = self._start
        return self._state

    def get_state(self):
        return self._state

    def set_state(self, state) -> None:
        self._state = tuple(state)

    def transition_probabilities(self, state, actions):
        """``[(prob, successor), ...]`` for the joint action, ``None`` if ``state`` is terminal."""
        t = state[0]
        if t >= self.max_steps:
            return None
        pos = state[1:]
        move = self._move
        targets = [move[p][a] for p, a in zip(pos, actions)]
        occupied = set(pos)
        contests: dict[int, list[int]] = {}
        for i, (p, q) in enumerate(zip(pos, targets)):
            if q != p and q not in occupied:
                contests.setdefault(q, []).append(i)
        new = list(pos)
        multi = []
        for cell, who in contests.items():
            if len(who) == 1:
                new[who[0]] = cell
            else:
                multi.append((cell, who))
        if not multi:
            return [(1.0, (t + 1, *new))]
        # Each contested cell goes to one of its k contenders with probability 1/k.
        multi.sort()
        out = []
        for winners in itertools.product(*[who for _, who in multi]):
            succ = list(new)
            prob = 1.0
            for (cell, who), w in zip(multi, winners):
                succ[w] = cell
                prob /= len(who)
            out.append((prob, (t + 1, *succ)))
        return out

    # --- vectorised interface (the array DAG of dag.build_dag uses it) -----------------
    def _targets(self, agent: int, acts: np.ndarray) -> np.ndarray:
        """``(cells, K)`` int64: the target cell of ``agent`` for every joint action (cached)."""
        cache = self.__dict__.setdefault("_target_tables", {})
        if agent not in cache:
            move = np.asarray(self._move, dtype=np.int64)
            cache[agent] = np.ascontiguousarray(move[:, acts[:, agent]])
        return cache[agent]

    @property
    def batch_expansion(self) -> bool:
        """True when :meth:`expand_batch` covers every state (at most one contested cell
        per step, which holds for up to three agents)."""
        return len(self.agents) <= 3

    def codec(self):
        """int64 keys of state rows (mixed radix in tuple order: sorted keys = sorted states)."""
        from ..states import GridCodec

        return GridCodec(self.height * self.width, len(self.agents))

    def expand_batch(self, states: np.ndarray):
        """Every joint action of every state at once; the numbers of
        :meth:`transition_probabilities`, in the same outcome order.

        Returns ``(terminal (n,) bool, counts (n, K) uint8, probs (M,), succ_keys (M,))``
        with outcomes ordered by state, joint action (agent 0 least significant), outcome;
        successors as :meth:`codec` keys. Arrays are ``(states, joint actions)`` per agent,
        so the numpy calls are a few dozen per batch, not per joint action.
        """
        n, A = len(states), len(self.agents)
        nA = len(ACTIONS)
        K = nA**A
        C = self.height * self.width
        terminal = states[:, 0] >= self.max_steps
        all_live = not terminal.any()  # every wave but the last: slices instead of gathers
        live = slice(None) if all_live else np.flatnonzero(~terminal)
        P = states[live, 1:]
        radix = [C ** (A - 1 - i) for i in range(A)]
        stay_key = (states[live, 0] + 1) * C**A
        for i in range(A):
            stay_key += P[:, i] * radix[i]
        acts = (np.arange(K)[:, None] // nA ** np.arange(A)[None, :]) % nA  # (K, A)
        pos = [P[:, i : i + 1] for i in range(A)]  # (m, 1) each
        # (m, K) targets of agent i: one row gather from its (cells, K) target table
        T = [np.take(self._targets(i, acts), P[:, i], axis=0) for i in range(A)]
        active = []
        for i in range(A):
            a = T[i] != pos[0]  # moving into a cell free before the step (its own included)
            for j in range(1, A):
                a &= T[i] != pos[j]
            active.append(a)
        cnt = []  # contenders for my target (me included) if I am active, else 0
        for i in range(A):
            c = active[i].astype(np.uint8)
            for j in range(A):
                if j != i:
                    c += active[i] & active[j] & (T[i] == T[j])
            cnt.append(c)
        outcomes = np.maximum(np.maximum.reduce(cnt) if A > 1 else cnt[0], 1)  # one contested cell at most (A <= 3)
        if all_live:
            counts = outcomes
        else:
            counts = np.zeros((n, K), dtype=np.uint8)
            counts[live] = outcomes
        delta = [(T[i] - pos[i]) * radix[i] for i in range(A)]  # key change if agent i moves
        moved = np.repeat(stay_key[:, None], K, axis=1)
        for i in range(A):
            moved += delta[i] * (cnt[i] == 1)
        # Outcomes in (state, joint action, outcome) order: every outcome of a pair starts
        # as its uncontested successor; contested pairs are overwritten below.
        per_pair = outcomes.ravel()
        succ = np.repeat(moved.ravel(), per_pair)
        probs = np.repeat(1.0 / per_pair, per_pair)
        if outcomes.max(initial=1) > 1:
            # Contested pairs: outcome j = the j-th contender (in agent order) wins the cell.
            r, k = np.nonzero(outcomes > 1)
            first = np.cumsum(per_pair) - per_pair  # first outcome of each pair
            contested = [cnt[i][r, k] >= 2 for i in range(A)]
            rank = np.cumsum(np.stack(contested, axis=1), axis=1) - 1
            b, mv, oc = first[r * K + k], moved[r, k], outcomes[r, k]
            for j in range(int(oc.max())):
                rows = np.flatnonzero(oc > j)
                key = mv[rows].copy()
                for i in range(A):
                    key += np.where(contested[i][rows] & (rank[rows, i] == j), delta[i][r[rows], k[rows]], 0)
                succ[b[rows] + j] = key
                probs[b[rows] + j] = 1.0 / oc[rows]
        return terminal, counts, probs, succ

    # --- helpers --------------------------------------------------------------------
    def cell_name(self, cell: int) -> str:
        r, c = divmod(int(cell), self.width)
        return f"({r},{c})"

    def render(self, state) -> str:
        """The map with the agents of ``state`` drawn in (H/R), for humans reading output."""
        grid = [list(row.replace("H", ".").replace("R", ".")) for row in self.spec.rows]
        for i, p in enumerate(state[1:]):
            r, c = divmod(p, self.width)
            grid[r][c] = "H" if i in self.human_agent_indices else "R"
        return "\n".join("".join(row) for row in grid)

    def goal_generator(self) -> GridGoalGenerator:
        """The world's goals: "human h reaches goal cell c", equal weights."""
        return GridGoalGenerator(self)

    def __repr__(self) -> str:
        return (
            f"GridWorld({self.name!r}, {self.height}x{self.width}, agents={self.agents}, "
            f"max_steps={self.max_steps})"
        )


class ReachCellGoal(PossibleGoal):
    """Human ``human`` stands on ``cell``."""

    def __init__(self, human: int, cell: int, name: str = ""):
        self.human = human
        self.cell = cell
        self.name = name or f"cell {cell}"

    def is_achieved(self, state) -> int:
        return int(state[1 + self.human] == self.cell)

    def achieved_mask(self, states: np.ndarray) -> np.ndarray:
        return states[:, 1 + self.human] == self.cell

    def label(self) -> str:
        return f"agent {self.human} reaches {self.name}"

    def __eq__(self, other) -> bool:
        return isinstance(other, ReachCellGoal) and (self.human, self.cell) == (
            other.human,
            other.cell,
        )

    def __hash__(self) -> int:
        return hash((self.human, self.cell))

    def __repr__(self) -> str:
        return f"ReachCellGoal(human={self.human}, cell={self.cell})"


class GridGoalGenerator(PossibleGoalGenerator):
    """One goal per goal cell for each human, equal weights, in cell order."""

    state_independent = True  # the same goals in every state: enumerated once, at the root

    def __init__(self, world: GridWorld):
        self.world = world

    def generate(self, state, human_agent_index: int):
        for cell in self.world.goal_cells:
            yield ReachCellGoal(human_agent_index, cell, self.world.cell_name(cell)), 1.0
