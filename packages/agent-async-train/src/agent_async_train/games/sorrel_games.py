"""sorrel's own multi-agent examples, built exactly as their ``main.py`` builds them.

A thin adapter: the world, entities, observation specs, agents and models (iRainbow/IQN in
treasurehunt and tag) are sorrel's own objects; this module only holds each example's
default configuration (the values of its ``main.py``) and which sorrel classes to build.

``game.options`` are merged into the sorrel config (``game.options='{world: {height: 11,
width: 11}}'``); ``game.agents`` sets the example's own agent-count key; ``game.max_turns``
is *not* used: the example's ``experiment.max_turns`` is (override it via ``game.options``).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from ..errors import GameError

# example -> (default config from its main.py, agent-count key path, builder)
_DEFAULTS: dict[str, dict[str, Any]] = {
    "treasurehunt": {
        "experiment": {"epochs": 1000, "max_turns": 100, "record_period": 50},
        "model": {
            "agent_vision_radius": 2,
            "epsilon_decay": 0.0005,
            "observation_spec": "rgb",
            "num_agents": 2,
        },
        "world": {
            "height": 21,
            "width": 21,
            "gem_value": 10,
            "food_value": 5,
            "bone_value": -10,
            "spawn_prob": 0.005,
        },
    },
    "tag": {
        "experiment": {"epochs": 1000, "max_turns": 20, "record_period": 50},
        "model": {"epsilon_decay": 0.0001},
        "agent": {"num_agents": 5, "vision_radius": 4},
        "world": {"height": 11, "width": 11, "layers": 1},
    },
}
_AGENT_KEY = {"treasurehunt": ("model", "num_agents"), "tag": ("agent", "num_agents")}
EXAMPLES = tuple(_DEFAULTS)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def example_config(example: str, agents: int | None, options: dict) -> dict:
    """The example's ``main.py`` configuration, with ``game.options`` and ``game.agents``."""
    if example not in _DEFAULTS:
        raise GameError(f"unknown sorrel example {example!r}; choose one of: {', '.join(EXAMPLES)}")
    cfg = _merge(_DEFAULTS[example], options)
    if agents is not None:
        section, key = _AGENT_KEY[example]
        cfg.setdefault(section, {})[key] = agents
    return cfg


def build_env(example: str, config: dict):
    """Build the example's sorrel ``Environment`` (world, agents and models) from ``config``."""
    try:
        if example == "treasurehunt":
            from sorrel.examples.treasurehunt.entities import EmptyEntity
            from sorrel.examples.treasurehunt.env import TreasurehuntEnv
            from sorrel.examples.treasurehunt.world import TreasurehuntWorld

            world = TreasurehuntWorld(config=config, default_entity=EmptyEntity())
            return TreasurehuntEnv(world, config)
        if example == "tag":
            from sorrel.entities.basic_entities import EmptyEntity
            from sorrel.examples.tag.env import TagEnv
            from sorrel.worlds import Gridworld

            world = Gridworld(**config["world"], default_entity=EmptyEntity())
            return TagEnv(world, config)
    except ImportError as err:
        raise GameError(
            f"sorrel games need the sorrel extra ({err}): pip install 'agent-async-train[sorrel]'"
        ) from err
    except (KeyError, TypeError, ValueError) as err:
        raise GameError(f"sorrel:{example} rejected its options: {err}") from err
    raise GameError(f"unknown sorrel example {example!r}")


def renderer_class():
    """sorrel's own ``ImageRenderer`` (for ``evaluate --record``)."""
    return importlib.import_module("sorrel.utils.visualization").ImageRenderer
