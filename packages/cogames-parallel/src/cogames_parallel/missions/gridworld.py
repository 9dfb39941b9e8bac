"""Built-in cooperative gridworld missions as PettingZoo ``ParallelEnv``s.

One environment class, three *sites* that share the mechanics:

- ``harvest``: resources are scattered on the map; stepping onto one collects it
  (+1 to the collector). Collected cells regrow with probability ``regrow`` per step.
- ``delivery``: a few mines (never exhausted) and a base in the middle. Stepping onto
  a mine with empty hands picks one unit up; standing next to the base while carrying
  delivers it (+1 to the deliverer, ``team_bonus`` to every other agent).
- ``assembly``: resources are picked up (carry one) and brought to an assembler in the
  middle; it only fires when ``need`` carrying agents stand next to it at the same step,
  and each of them gets +1. Cooperation is required to score at all.

State is a handful of numpy arrays (walls, resources, mines, agent positions,
inventories); observations are computed for all agents at once with a sliding-window
view, so the env is cheap next to the policies.

Observation (float32 vector, same layout for every site so one policy can play all):
``4 x V x V`` egocentric window (V = 2 * view_radius + 1) with channels
[wall, resource-or-mine, target, other agent], then ``[carrying, dy, dx, t/max_steps]``
where (dy, dx) is the signed offset to the target divided by the map size (zero on
``harvest``, which has no target). Actions: 0 noop, 1 up, 2 down, 3 left, 4 right.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

SITES = ("harvest", "delivery", "assembly")
# (dy, dx) per action; index 0 is the no-op the rollout uses on timeouts.
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
N_CHANNELS = 4
N_EXTRA = 4


def decode_observation(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an observation into its ``(4, V, V)`` window and its 4 extra features.

    Raises ValueError when ``obs`` does not have the built-in layout (a user mission).
    """
    obs = np.asarray(obs, dtype=np.float32).ravel()
    cells = (obs.size - N_EXTRA) / N_CHANNELS
    side = int(round(cells**0.5))
    if obs.size <= N_EXTRA or side * side != cells or side % 2 == 0:
        raise ValueError(
            f"observation of size {obs.size} does not have the built-in cogames layout "
            "(4 x V x V window + 4 features)"
        )
    return obs[:-N_EXTRA].reshape(N_CHANNELS, side, side), obs[-N_EXTRA:]


class CoopGridEnv(ParallelEnv):
    """Cooperative gridworld (see the module docstring for the rules)."""

    metadata = {"name": "cogames_grid_v0", "render_modes": []}

    def __init__(
        self,
        site: str = "harvest",
        width: int = 12,
        height: int = 12,
        num_agents: int = 4,
        max_steps: int = 100,
        resource_density: float = 0.08,
        regrow: float = 0.0,
        wall_density: float = 0.05,
        mines: int = 3,
        need: int = 2,
        team_bonus: float = 0.25,
        view_radius: int = 3,
        map_seed: int | None = None,
    ) -> None:
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")
        if width < 5 or height < 5:
            raise ValueError(f"map must be at least 5x5, got {width}x{height}")
        if num_agents < 1:
            raise ValueError(f"num_agents must be >= 1, got {num_agents}")
        if num_agents > (width - 2) * (height - 2) // 2:
            raise ValueError(f"{num_agents} agents do not fit on a {width}x{height} map")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.site = site
        self.width, self.height = int(width), int(height)
        self.max_steps = int(max_steps)
        self.resource_density = float(resource_density)
        self.regrow = float(regrow)
        self.wall_density = float(wall_density)
        self.n_mines = int(mines)
        self.need = int(need)
        self.team_bonus = float(team_bonus)
        self.view_radius = int(view_radius)
        self.map_seed = map_seed
        self.possible_agents = [f"agent_{i}" for i in range(int(num_agents))]
        self.agents: list[str] = []
        side = 2 * self.view_radius + 1
        self._obs_space = spaces.Box(
            -1.0, 1.0, shape=(N_CHANNELS * side * side + N_EXTRA,), dtype=np.float32
        )
        self._act_space = spaces.Discrete(len(MOVES))
        self._stats: dict[str, float] = {}

    # PettingZoo calls these per agent; every agent shares one space.
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_space

    # ------------------------------------------------------------------ reset
    def reset(self, seed: int | None = None, options: dict | None = None):
        self._rng = np.random.default_rng(seed)
        # A fixed map seed keeps the layout across episodes while dynamics still vary.
        map_rng = self._rng if self.map_seed is None else np.random.default_rng(self.map_seed)
        h, w = self.height, self.width
        walls = np.zeros((h, w), dtype=bool)
        walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = True
        interior = map_rng.random((h, w)) < self.wall_density
        walls |= interior
        self.target = np.array([h // 2, w // 2], dtype=np.int64)
        has_target = self.site != "harvest"
        # keep the target and its four neighbours open so it is always reachable
        if has_target:
            ty, tx = self.target
            walls[ty - 1 : ty + 2, tx - 1 : tx + 2] = False
        free = ~walls
        if has_target:
            free[ty, tx] = False
        self.walls = walls
        self.resources = np.zeros((h, w), dtype=bool)
        self.mines = np.zeros((h, w), dtype=bool)
        self.spawn_resource = np.zeros((h, w), dtype=bool)
        if self.site == "delivery":
            cells = np.flatnonzero(free.ravel())
            pick = map_rng.choice(cells, size=min(self.n_mines, cells.size), replace=False)
            self.mines.ravel()[pick] = True
        else:
            self.resources = free & (map_rng.random((h, w)) < self.resource_density)
            self.spawn_resource = self.resources.copy()
        open_cells = np.flatnonzero((free & ~self.resources & ~self.mines).ravel())
        n = len(self.possible_agents)
        start = map_rng.choice(open_cells, size=n, replace=False)
        self.pos = np.stack(np.unravel_index(start, (h, w)), axis=1).astype(np.int64)
        self.carrying = np.zeros(n, dtype=bool)
        self.t = 0
        self.agents = list(self.possible_agents)
        self._stats = {"moves_blocked": 0.0}
        if self.site == "harvest":
            self._stats["resources_collected"] = 0.0
        elif self.site == "delivery":
            self._stats.update(picked_up=0.0, delivered=0.0)
        else:
            self._stats.update(picked_up=0.0, assembled=0.0)
        obs = self._observe()
        return obs, {a: {} for a in self.agents}

    # ------------------------------------------------------------------- step
    def step(self, actions: dict[str, int]):
        n = len(self.possible_agents)
        rewards = np.zeros(n, dtype=np.float64)
        occupied = np.zeros((self.height, self.width), dtype=bool)
        occupied[self.pos[:, 0], self.pos[:, 1]] = True
        blocked_target = self.site != "harvest"
        # Agents move in index order so conflicts resolve the same way on every run.
        for i, agent in enumerate(self.possible_agents):
            a = int(actions.get(agent, 0))
            if not 0 <= a < len(MOVES):
                raise ValueError(f"{agent}: action {a} is outside Discrete({len(MOVES)})")
            if a == 0:
                continue
            ny, nx = self.pos[i] + MOVES[a]
            if (
                self.walls[ny, nx]
                or occupied[ny, nx]
                or (blocked_target and ny == self.target[0] and nx == self.target[1])
            ):
                self._stats["moves_blocked"] += 1
                continue
            occupied[self.pos[i, 0], self.pos[i, 1]] = False
            occupied[ny, nx] = True
            self.pos[i] = (ny, nx)
            if self.site == "harvest":
                if self.resources[ny, nx]:
                    self.resources[ny, nx] = False
                    rewards[i] += 1.0
                    self._stats["resources_collected"] += 1
            elif self.site == "delivery":
                if self.mines[ny, nx] and not self.carrying[i]:
                    self.carrying[i] = True
                    self._stats["picked_up"] += 1
            elif self.resources[ny, nx] and not self.carrying[i]:  # assembly
                self.resources[ny, nx] = False
                self.carrying[i] = True
                self._stats["picked_up"] += 1
        near = np.abs(self.pos - self.target).sum(axis=1) <= 1
        if self.site == "delivery":
            drop = near & self.carrying
            if drop.any():
                k = int(drop.sum())
                rewards += self.team_bonus * k
                rewards[drop] += 1.0 - self.team_bonus
                self.carrying[drop] = False
                self._stats["delivered"] += k
        elif self.site == "assembly":
            ready = near & self.carrying
            if ready.sum() >= self.need:
                rewards[ready] += 1.0
                self.carrying[ready] = False
                self._stats["assembled"] += 1
        if self.regrow > 0:
            empty = self.spawn_resource & ~self.resources
            regrow = empty & (self._rng.random(empty.shape) < self.regrow)
            regrow[self.pos[:, 0], self.pos[:, 1]] = False
            self.resources |= regrow
        self.t += 1
        done = self.t >= self.max_steps
        obs = self._observe()
        names = self.possible_agents
        rew = {a: float(rewards[i]) for i, a in enumerate(names)}
        terminations = {a: False for a in names}
        truncations = {a: done for a in names}
        infos = {a: {} for a in names}
        if done:
            self.agents = []
        return obs, rew, terminations, truncations, infos

    # ------------------------------------------------------------- observing
    def _observe(self) -> dict[str, np.ndarray]:
        r = self.view_radius
        layers = np.zeros((N_CHANNELS, self.height, self.width), dtype=np.float32)
        layers[0] = self.walls
        layers[1] = self.resources | self.mines
        if self.site != "harvest":
            layers[2, self.target[0], self.target[1]] = 1.0
        layers[3, self.pos[:, 0], self.pos[:, 1]] = 1.0
        padded = np.pad(layers, ((0, 0), (r, r), (r, r)))
        padded[0, :r, :] = padded[0, -r:, :] = 1.0  # outside the map reads as wall
        padded[0, :, :r] = padded[0, :, -r:] = 1.0
        win = np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1), axis=(1, 2))
        # win[c, y, x] is the window whose top-left is (y, x) in padded coords = centred on (y, x)
        views = win[:, self.pos[:, 0], self.pos[:, 1]]  # (C, n, V, V)
        views = np.ascontiguousarray(views.transpose(1, 0, 2, 3))
        views[:, 3, r, r] = 0.0  # an agent does not see itself as "other agent"
        n = len(self.possible_agents)
        extra = np.zeros((n, N_EXTRA), dtype=np.float32)
        extra[:, 0] = self.carrying
        if self.site != "harvest":
            extra[:, 1] = (self.target[0] - self.pos[:, 0]) / self.height
            extra[:, 2] = (self.target[1] - self.pos[:, 1]) / self.width
        extra[:, 3] = self.t / self.max_steps
        flat = np.concatenate([views.reshape(n, -1), extra], axis=1)
        return {a: flat[i] for i, a in enumerate(self.possible_agents)}

    def episode_stats(self) -> dict[str, float]:
        """Game statistics of the current episode (summed over steps)."""
        return dict(self._stats)

    def render(self) -> str:
        grid = np.full((self.height, self.width), ".", dtype="<U1")
        grid[self.walls] = "#"
        grid[self.resources] = "r"
        grid[self.mines] = "m"
        if self.site != "harvest":
            grid[self.target[0], self.target[1]] = "B" if self.site == "delivery" else "A"
        for i, (y, x) in enumerate(self.pos):
            grid[y, x] = str(i % 10)
        return "\n".join("".join(row) for row in grid)

    def close(self) -> None:
        pass
