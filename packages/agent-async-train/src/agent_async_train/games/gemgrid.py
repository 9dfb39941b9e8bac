"""GemGrid: N agents collect respawning gems on a walled grid.

The whole state is a handful of numpy arrays (wall grid, gem grid, agent positions,
gem respawn timers); there is no Python object per cell. Observations for all agents are
one egocentric one-hot window each, cut out of a padded ``(channels, H+2r, W+2r)`` array
with a single fancy-indexing gather.
"""

from __future__ import annotations

import numpy as np

from .base import GameError, StepResult

# Action ids: stay, up, down, left, right.
ACTIONS = ("stay", "up", "down", "left", "right")
_DELTAS = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)

# Observation channels of the egocentric view.
CHANNELS = ("wall", "gem", "other_agent")


class GemGrid:
    """A gridworld with ``num_agents`` independent gem collectors.

    Args:
        num_agents: agents on the board (default 4).
        size: side of the square grid including the border wall.
        gems: gems on the board at the start of an episode; a collected gem respawns on a
            random free cell ``respawn_delay`` turns later.
        walls: interior wall cells, placed once per game from ``layout_seed`` (the layout is
            the same in every episode, so it is part of the task to learn).
        view_radius: the agent sees the ``(2r+1) x (2r+1)`` window around itself.
        max_turns: episode length; the last turn is *truncated*, never *terminated*.
        execution: ``"simultaneous"`` (all moves resolved together; two agents aiming at the
            same cell, or at an occupied cell, stay put) or ``"sequential"`` (agents move one
            after another in index order, each seeing the moves before it).
        seed: seed of the episode RNG (agent and gem placement, respawns).
    """

    obs_dtype = np.dtype(np.uint8)
    reward_name = "gems"  # what the summaries call the score
    num_actions = len(ACTIONS)

    def __init__(
        self,
        num_agents: int = 4,
        size: int = 9,
        gems: int = 8,
        walls: int = 6,
        view_radius: int = 3,
        max_turns: int = 50,
        respawn_delay: int = 5,
        execution: str = "simultaneous",
        layout_seed: int = 0,
        seed: int | None = None,
    ):
        if execution not in ("simultaneous", "sequential"):
            raise GameError(f"execution must be 'simultaneous' or 'sequential', got {execution!r}")
        if size < 3 or view_radius < 1 or max_turns < 1 or num_agents < 1 or gems < 0:
            raise GameError(
                "gemgrid needs size >= 3, view_radius >= 1, max_turns >= 1, agents >= 1, gems >= 0"
            )
        interior = (size - 2) ** 2
        if num_agents + gems + walls > interior:
            raise GameError(
                f"gemgrid: {num_agents} agents + {gems} gems + {walls} walls do not fit the "
                f"{size - 2}x{size - 2} interior; raise game.size or lower the counts"
            )
        self.num_agents = num_agents
        self.size = size
        self.num_gems = gems
        self.view_radius = view_radius
        self.max_turns = max_turns
        self.respawn_delay = respawn_delay
        self.execution = execution
        self.wall = self._make_layout(size, walls, np.random.default_rng(layout_seed))
        self.rng = np.random.default_rng(seed)
        k = 2 * view_radius + 1
        self.obs_dim = len(CHANNELS) * k * k
        # Offsets of the view window, broadcast against agent positions in observe().
        self._dy = np.arange(-view_radius, view_radius + 1)[:, None]
        self._dx = np.arange(-view_radius, view_radius + 1)[None, :]
        r = view_radius
        self._padded = np.zeros((len(CHANNELS), size + 2 * r, size + 2 * r), dtype=np.uint8)
        self._padded[0] = 1  # outside the map counts as wall
        self._padded[0, r : r + size, r : r + size] = self.wall
        self.pos = np.zeros((num_agents, 2), dtype=np.int64)
        self.gem = np.zeros((size, size), dtype=bool)
        self.respawn_at = np.full(gems, -1, dtype=np.int64)  # -1: gem is on the board
        self.turn = 0

    @staticmethod
    def _make_layout(size: int, walls: int, rng: np.random.Generator) -> np.ndarray:
        """Border walls plus ``walls`` interior walls that keep the free cells connected."""
        for _ in range(1000):
            wall = np.zeros((size, size), dtype=bool)
            wall[0, :] = wall[-1, :] = wall[:, 0] = wall[:, -1] = True
            interior = np.flatnonzero(~wall.ravel())
            wall.ravel()[rng.choice(interior, size=walls, replace=False)] = True
            if _connected(~wall):
                return wall
        raise GameError(f"could not place {walls} connected walls on a {size}x{size} grid")

    # -- interface ------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode: agents and gems on distinct random free cells."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        free = np.flatnonzero(~self.wall.ravel())
        cells = self.rng.choice(free, size=self.num_agents + self.num_gems, replace=False)
        self.pos = np.stack(np.divmod(cells[: self.num_agents], self.size), axis=1)
        self.gem[:] = False
        self.gem.ravel()[cells[self.num_agents :]] = True
        self.respawn_at[:] = -1
        self.turn = 0
        return self.observe()

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply one turn of actions (shape ``(num_agents,)``) and collect gems."""
        actions = np.asarray(actions, dtype=np.int64)
        if self.execution == "sequential":
            rewards = self._move_sequential(actions)
        else:
            rewards = self._move_simultaneous(actions)
        self.turn += 1
        self._respawn(int(rewards.sum()))
        n = self.num_agents
        truncated = np.full(n, self.turn >= self.max_turns)
        return StepResult(
            obs=self.observe(),
            rewards=rewards,
            terminated=np.zeros(n, dtype=bool),
            truncated=truncated,
            alive=np.ones(n, dtype=bool),
        )

    def observe(self) -> np.ndarray:
        """Egocentric one-hot windows of every agent, ``(num_agents, obs_dim)``, in one gather."""
        r = self.view_radius
        p = self._padded
        s = self.size
        p[1, r : r + s, r : r + s] = self.gem
        p[2] = 0
        p[2, self.pos[:, 0] + r, self.pos[:, 1] + r] = 1
        ys = self.pos[:, 0, None, None] + r + self._dy  # (N, k, 1)
        xs = self.pos[:, 1, None, None] + r + self._dx  # (N, 1, k)
        view = p[:, ys, xs]  # (C, N, k, k)
        view[2, :, r, r] = 0  # an agent does not see itself as "other agent"
        return np.ascontiguousarray(view.transpose(1, 0, 2, 3)).reshape(self.num_agents, -1)

    def get_state(self) -> dict:
        return {
            "pos": self.pos.copy(),
            "gem": self.gem.copy(),
            "respawn_at": self.respawn_at.copy(),
            "turn": self.turn,
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict) -> None:
        self.pos = np.array(state["pos"], dtype=np.int64)
        self.gem = np.array(state["gem"], dtype=bool)
        self.respawn_at = np.array(state["respawn_at"], dtype=np.int64)
        self.turn = int(state["turn"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]

    # -- dynamics -------------------------------------------------------------------
    def _move_simultaneous(self, actions: np.ndarray) -> np.ndarray:
        target = self.pos + _DELTAS[actions]
        moving = actions != 0
        ty, tx = target[:, 0], target[:, 1]
        occupied = np.zeros((self.size, self.size), dtype=bool)
        occupied[self.pos[:, 0], self.pos[:, 1]] = True
        candidate = moving & ~self.wall[ty, tx] & ~occupied[ty, tx]
        flat = ty * self.size + tx
        claims = np.bincount(flat[candidate], minlength=self.size * self.size)
        ok = candidate & (claims[flat] == 1)
        self.pos[ok] = target[ok]
        return self._collect()

    def _move_sequential(self, actions: np.ndarray) -> np.ndarray:
        occupied = np.zeros((self.size, self.size), dtype=bool)
        occupied[self.pos[:, 0], self.pos[:, 1]] = True
        rewards = np.zeros(self.num_agents, dtype=np.float32)
        for i, a in enumerate(actions.tolist()):  # inherently ordered: agent i sees 0..i-1
            y, x = self.pos[i]
            ny, nx = y + _DELTAS[a, 0], x + _DELTAS[a, 1]
            if a and not self.wall[ny, nx] and not occupied[ny, nx]:
                occupied[y, x] = False
                occupied[ny, nx] = True
                self.pos[i] = (ny, nx)
            if self.gem[self.pos[i, 0], self.pos[i, 1]]:
                self.gem[self.pos[i, 0], self.pos[i, 1]] = False
                rewards[i] = 1.0
        return rewards

    def _collect(self) -> np.ndarray:
        ys, xs = self.pos[:, 0], self.pos[:, 1]
        rewards = self.gem[ys, xs].astype(np.float32)
        self.gem[ys, xs] = False  # agents never share a cell, so no gem is paid twice
        return rewards

    def _respawn(self, collected: int) -> None:
        # Schedule the gems collected this turn, then place the ones that are due.
        if collected:
            # Invariant: the slots marked -1 are exactly the gems on the board.
            on_board = np.flatnonzero(self.respawn_at < 0)[:collected]
            self.respawn_at[on_board] = self.turn + self.respawn_delay
        due = np.flatnonzero((self.respawn_at >= 0) & (self.respawn_at <= self.turn))
        if due.size:
            blocked = self.wall | self.gem
            blocked[self.pos[:, 0], self.pos[:, 1]] = True
            free = np.flatnonzero(~blocked.ravel())
            k = min(due.size, free.size)
            self.gem.ravel()[self.rng.choice(free, size=k, replace=False)] = True
            self.respawn_at[due[:k]] = -1


def _connected(free: np.ndarray) -> bool:
    """Whether the free cells form one 4-connected region (a small flood fill)."""
    cells = np.argwhere(free)
    if len(cells) == 0:
        return True
    seen = np.zeros_like(free)
    stack = [tuple(cells[0])]
    seen[stack[0]] = True
    while stack:
        y, x = stack.pop()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if free[ny, nx] and not seen[ny, nx]:
                seen[ny, nx] = True
                stack.append((ny, nx))
    return bool(seen[free].all())
