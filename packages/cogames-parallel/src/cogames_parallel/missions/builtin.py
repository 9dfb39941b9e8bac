"""The registry of built-in missions (sites x layouts) and their variants."""

from __future__ import annotations

from typing import Any

from cogames_parallel.missions.base import Mission
from cogames_parallel.missions.gridworld import CoopGridEnv


def _scale(key: str, factor: float):
    return lambda p: {**p, key: p[key] * factor}


# Variants shared by every built-in mission.
COMMON_VARIANTS: dict[str, Any] = {
    "small": {"width": 8, "height": 8},
    "large": {"width": 20, "height": 20},
    "scarce": _scale("resource_density", 1 / 3),
    "abundant": _scale("resource_density", 2.0),
    "regrow": {"regrow": 0.05},
    "walled": {"wall_density": 0.18},
    "short": {"max_steps": 50},
    "long": {"max_steps": 300},
    "pair": {"num_agents": 2},
    "crowded": {"num_agents": 8},
}

_LAYOUTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "harvest.open": (
        "harvest",
        {"width": 12, "height": 12, "resource_density": 0.10, "wall_density": 0.04},
        "collect scattered resources on an open field",
    ),
    "harvest.orchard": (
        "harvest",
        {"width": 14, "height": 14, "resource_density": 0.06, "regrow": 0.02},
        "resources regrow; pace the harvest",
    ),
    "harvest.maze": (
        "harvest",
        {"width": 14, "height": 14, "resource_density": 0.10, "wall_density": 0.20},
        "collect resources between many walls",
    ),
    "delivery.open": (
        "delivery",
        {"width": 12, "height": 12, "mines": 3},
        "carry ore from mines to the central base (team bonus per delivery)",
    ),
    "delivery.far": (
        "delivery",
        {"width": 18, "height": 18, "mines": 4, "max_steps": 150},
        "long hauls from distant mines",
    ),
    "assembly.pairs": (
        "assembly",
        {"width": 12, "height": 12, "resource_density": 0.08, "regrow": 0.02, "need": 2},
        "two carriers must stand at the assembler together",
    ),
    "assembly.trio": (
        "assembly",
        {
            "width": 12,
            "height": 12,
            "num_agents": 6,
            "resource_density": 0.08,
            "regrow": 0.02,
            "need": 3,
        },
        "three carriers must meet at the assembler",
    ),
}

DEFAULTS: dict[str, Any] = {"num_agents": 4, "max_steps": 100}


def _build_registry() -> dict[str, Mission]:
    registry = {}
    for name, (site, params, desc) in _LAYOUTS.items():
        full = {**DEFAULTS, "site": site, **params}
        registry[name] = Mission(
            name=name,
            factory=CoopGridEnv,
            params=full,
            variants=COMMON_VARIANTS,
            description=desc,
            source="builtin",
            num_agents=full["num_agents"],
            max_steps=full["max_steps"],
        )
    return registry


BUILTIN_MISSIONS: dict[str, Mission] = _build_registry()
