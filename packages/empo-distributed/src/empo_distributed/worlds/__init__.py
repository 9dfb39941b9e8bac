"""Built-in gridworlds and map-file loading.

``load_world("small")`` builds a built-in world; ``load_world("path/to/map.txt")``
parses a map file (format in ``gridworld.parse_map`` and ``docs/empo-distributed.md``).
"""

from __future__ import annotations

from pathlib import Path

from ..world_model import WorldError
from .gridworld import ACTIONS, GridGoalGenerator, GridSpec, GridWorld, ReachCellGoal, parse_map

# name -> (description, map text). Sizes are the reachable states at the default max_steps.
BUILTIN_MAPS: dict[str, tuple[str, str]] = {
    "tiny": (
        "smallest: a few dozen states",
        """
max_steps = 4
#####
#H.G#
#.R.#
#####
""",
    ),
    "contest": (
        "two agents contend for the middle cell (1/2 each)",
        """
max_steps = 5
#######
##.G.##
##H.R##
#.....#
#######
""",
    ),
    "small": (
        "default world, ~600 states",
        """
max_steps = 6
######
#H..G#
#....#
#.#..#
#G..R#
######
""",
    ),
    "two_humans": (
        "two humans, 125 joint actions, ~2k states",
        """
max_steps = 4
######
#H.GH#
#....#
#G.R.#
######
""",
    ),
    "medium": (
        "room with a pillar, ~3k states",
        """
max_steps = 8
########
#H....G#
#......#
#..##..#
#..##..#
#G.....#
#...R.G#
########
""",
    ),
    "large": (
        "room with pillars, ~2.4e4 states",
        """
max_steps = 12
############
#H........G#
#..........#
#..........#
#...#..#...#
#..........#
#..........#
#...#..#...#
#..........#
#G.........#
#........RG#
############
""",
    ),
    "huge": (
        "hall with pillars, ~1.2e5 states",
        """
max_steps = 18
################
#H............G#
#..............#
#...#......#...#
#..............#
#..............#
#.....#..#.....#
#..............#
#..............#
#...#......#...#
#..............#
#G............G#
#.............R#
################
""",
    ),
    "giant": (
        "16x16 hall, agents start in the middle, ~1e6 states",
        """
max_steps = 25
##################
#G..............G#
#................#
#................#
#...#........#...#
#................#
#................#
#................#
#.......H........#
#.........R......#
#................#
#................#
#................#
#...#........#...#
#................#
#................#
#G..............G#
##################
""",
    ),
}

# Reachable states at the default horizon (tests/test_dag.py checks the smaller ones;
# tools/bench_empo.py --sizes 1e6 builds giant).
STATE_COUNTS = {
    "tiny": 95,
    "contest": 380,
    "small": 642,
    "two_humans": 1895,
    "medium": 2927,
    "large": 23965,
    "huge": 113900,
    "giant": 1011554,
}


def list_worlds(max_steps: int | None = None) -> list[dict]:
    """Name, description, agents, default max_steps of each built-in world."""
    out = []
    for name, (desc, text) in BUILTIN_MAPS.items():
        spec = parse_map(text, name)
        world = GridWorld(spec, max_steps)
        out.append(
            {
                "name": name,
                "description": desc,
                "size": f"{world.height - 2}x{world.width - 2}",
                "humans": len(world.human_agent_indices),
                "robots": len(world.robot_agent_indices),
                "goals_per_human": len(world.goal_cells),
                "max_steps": world.max_steps,
                "states": STATE_COUNTS.get(name) if max_steps is None else None,
            }
        )
    return out


def load_world(world: str, max_steps: int | None = None, *, smoke_max_steps: int | None = None):
    """A built-in world by name, a map file by path, or ``module:factory`` / ``file.py:factory``.

    ``factory()`` (or ``factory(max_steps=N)`` when ``max_steps`` is given) must return an
    EMPO world model, e.g. an unchanged upstream MultiGrid env; the CLI takes its goals
    from ``goal_generator()`` or EMPO's ``possible_goal_generator``. ``max_steps`` given to
    a factory without that parameter is an error, not silently ignored.
    ``smoke_max_steps`` caps the horizon of built-in worlds and map files (smoke runs).
    Raises ``WorldError`` with a clear message.
    """

    def horizon(spec):
        steps = max_steps if max_steps is not None else spec.max_steps
        return min(steps, smoke_max_steps) if smoke_max_steps else steps

    if world in BUILTIN_MAPS:
        spec = parse_map(BUILTIN_MAPS[world][1], world)
        return GridWorld(spec, horizon(spec))
    path = Path(world)
    if not path.exists() and ":" in world:
        return _load_python_world(world, max_steps)
    if not path.exists():
        raise WorldError(
            f"unknown world {world!r}: not a built-in world ({', '.join(BUILTIN_MAPS)}) "
            "and no such map file; see --list-worlds"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorldError(f"cannot read map file {world}: {exc}") from None
    spec = parse_map(text, path.name)
    return GridWorld(spec, horizon(spec))


def _load_python_world(spec: str, max_steps: int | None):
    import importlib
    import importlib.util
    import inspect

    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            if not Path(target).exists():
                raise WorldError(f"world file {target} does not exist")
            mod_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        factory = getattr(module, attr)
    except WorldError:
        raise
    except Exception as exc:
        raise WorldError(f"cannot load world {spec!r}: {type(exc).__name__}: {exc}") from None
    try:
        params = inspect.signature(factory).parameters
        takes_steps = "max_steps" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
    except (TypeError, ValueError):
        takes_steps = False
    if max_steps is not None and not takes_steps:
        raise WorldError(
            f"world factory {spec!r} takes no max_steps argument, so --max-steps "
            f"{max_steps} cannot be applied; drop it or add a max_steps parameter"
        )
    try:
        # max_steps only when given: an upstream env keeps its own default otherwise
        world = factory(max_steps=max_steps) if max_steps is not None else factory()
    except Exception as exc:
        raise WorldError(f"world factory {spec!r} failed: {type(exc).__name__}: {exc}") from None
    missing = [
        m
        for m in ("transition_probabilities", "reset", "get_state", "agents")
        if not hasattr(world, m)
    ]
    if missing:
        raise WorldError(
            f"{spec} returned {type(world).__name__}, which lacks {missing} of the WorldModel protocol"
        )
    return world


__all__ = [
    "ACTIONS",
    "BUILTIN_MAPS",
    "GridGoalGenerator",
    "GridSpec",
    "GridWorld",
    "ReachCellGoal",
    "list_worlds",
    "load_world",
    "parse_map",
]
