"""Games: the interface, the built-in GemGrid, PettingZoo bridging and the name registry.

The registry is torch-free and imports a game's module only when the game is built, so the
CLI can check a game name (and answer a typo) at once.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from ..errors import GameError
from .base import Game, StepResult

__all__ = [
    "GAMES",
    "Game",
    "GameError",
    "StepResult",
    "check_game_name",
    "make_game",
    "resolve_factory",
]

# Built-in games: name -> (module, factory, keyword that receives game.agents or None when the
# game fixes its agent count). Anything else can be given as "package.module:factory".
GAMES: dict[str, tuple[str, str, str | None]] = {
    "gemgrid": ("agent_async_train.games.gemgrid", "GemGrid", "num_agents"),
    "gemgrid-pettingzoo": ("agent_async_train.games.pettingzoo_adapter", "gemgrid_pz", "num_agents"),
    # PettingZoo's SISL pursuit (needs the `pursuit` extra: pygame, imported by PettingZoo).
    "pursuit": ("agent_async_train.games.pettingzoo_adapter", "pursuit", "n_pursuers"),
}

# sorrel's own multi-agent examples (the `sorrel` extra): see games/sorrel_games.py.
SORREL_PREFIX = "sorrel:"
SORREL_GAMES = ("treasurehunt", "tag")


def is_sorrel(name: str) -> bool:
    return name.startswith(SORREL_PREFIX)


def check_game_name(name: str) -> None:
    """Raise ``GameError`` for a name that is neither built in nor ``module:factory``.

    Built-in names are checked without importing anything heavy.
    """
    if name in GAMES:
        return
    if is_sorrel(name):
        example = name.removeprefix(SORREL_PREFIX)
        if example not in SORREL_GAMES:
            raise GameError(
                f"unknown sorrel example {example!r}; choose one of: "
                + ", ".join(SORREL_PREFIX + g for g in SORREL_GAMES)
            )
        if importlib.util.find_spec("sorrel") is None:
            raise GameError(
                "sorrel games need the sorrel extra: pip install 'agent-async-train[sorrel]' "
                "(or uv sync --extra sorrel)"
            )
        return
    resolve_factory(name)


def resolve_factory(name: str) -> Callable[..., object]:
    """The factory for a built-in game name or a ``module:callable`` spec."""
    if name in GAMES:
        module_name, attr, _ = GAMES[name]
        return getattr(importlib.import_module(module_name), attr)
    if ":" in name and not is_sorrel(name):
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise GameError(f"cannot import game module {module_name!r}: {err}") from err
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise GameError(f"{module_name!r} has no callable {attr!r} to build the game")
        return factory
    known = ", ".join([*sorted(GAMES), *(SORREL_PREFIX + g for g in SORREL_GAMES)])
    raise GameError(f"unknown game {name!r}; choose one of: {known}, or give 'module:factory'")


def _is_parallel_env(obj) -> bool:
    return all(
        hasattr(obj, n) for n in ("possible_agents", "observation_space", "action_space", "step")
    )


def make_game(name: str, agents: int | None = None, **kwargs) -> Game:
    """Build a game by name; a PettingZoo ``ParallelEnv`` returned by a factory is wrapped.

    ``agents`` (``game.agents``, ``--agents``) goes to the game's own agent-count argument
    where it has one; a game that fixes its agent count rejects any other number.
    """
    if is_sorrel(name):
        raise GameError(f"{name!r} is a sorrel example: it runs through agent_async_train.sorrel_run")
    factory = resolve_factory(name)
    count_kw = GAMES[name][2] if name in GAMES else None
    if agents is not None and count_kw is not None:
        kwargs[count_kw] = agents
    try:
        game = factory(**kwargs)
    except TypeError as err:
        raise GameError(f"game {name!r} rejected its options: {err}") from err
    except ImportError as err:
        raise GameError(f"game {name!r} cannot be built: {err}") from err
    if not isinstance(game, Game) and _is_parallel_env(game):
        from .pettingzoo_adapter import PettingZooGame

        game = PettingZooGame(game)
    if not isinstance(game, Game):
        raise GameError(
            f"game {name!r} built a {type(game).__name__}, which is neither a Game nor a ParallelEnv"
        )
    if agents is not None and game.num_agents != agents:
        raise GameError(
            f"game {name!r} has a fixed number of agents ({game.num_agents}); "
            f"drop --agents/game.agents or set it to {game.num_agents}"
        )
    return game


_LAZY = {
    "GemGrid": "agent_async_train.games.gemgrid",
    "PettingZooGame": "agent_async_train.games.pettingzoo_adapter",
    "GemGridParallelEnv": "agent_async_train.games.pettingzoo_adapter",
}


def __getattr__(name: str):
    # GemGrid and the PettingZoo bridge on first use: importing gymnasium/pettingzoo costs
    # time that a CLI answering a bad argument should not pay.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
