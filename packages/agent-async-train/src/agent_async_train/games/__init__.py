"""Games: the interface, the built-in GemGrid, PettingZoo bridging and the name registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .base import Game, GameError, StepResult
from .gemgrid import GemGrid
from .pettingzoo_adapter import GemGridParallelEnv, PettingZooGame

__all__ = [
    "GAMES",
    "Game",
    "GameError",
    "GemGrid",
    "GemGridParallelEnv",
    "PettingZooGame",
    "StepResult",
    "make_game",
]


def _gemgrid_pz(**kwargs) -> PettingZooGame:
    return PettingZooGame(GemGridParallelEnv(**kwargs))


# Built-in games by name. Anything else can be given as "package.module:factory".
GAMES: dict[str, Callable[..., object]] = {
    "gemgrid": GemGrid,
    "gemgrid-pettingzoo": _gemgrid_pz,
}


def _is_parallel_env(obj) -> bool:
    return all(
        hasattr(obj, n) for n in ("possible_agents", "observation_space", "action_space", "step")
    )


def resolve_factory(name: str) -> Callable[..., object]:
    """The factory for a built-in game name or a ``module:callable`` spec."""
    if name in GAMES:
        return GAMES[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise GameError(f"cannot import game module {module_name!r}: {err}") from err
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise GameError(f"{module_name!r} has no callable {attr!r} to build the game")
        return factory
    known = ", ".join(sorted(GAMES))
    raise GameError(f"unknown game {name!r}; choose one of: {known}, or give 'module:factory'")


def make_game(name: str, **kwargs) -> Game:
    """Build a game by name; a PettingZoo ``ParallelEnv`` returned by a factory is wrapped."""
    factory = resolve_factory(name)
    try:
        game = factory(**kwargs)
    except TypeError as err:
        raise GameError(f"game {name!r} rejected its options: {err}") from err
    if not isinstance(game, Game) and _is_parallel_env(game):
        game = PettingZooGame(game)
    if not isinstance(game, Game):
        raise GameError(
            f"game {name!r} built a {type(game).__name__}, which is neither a Game nor a ParallelEnv"
        )
    return game
