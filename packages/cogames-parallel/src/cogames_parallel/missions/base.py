"""The ``Mission`` record: a name, an env factory, its parameters and variants."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A variant maps the current parameters to new ones (e.g. halve the resource density).
Variant = Callable[[dict[str, Any]], dict[str, Any]] | Mapping[str, Any]


class MissionError(ValueError):
    """A mission that does not exist, cannot be loaded or got a bad variant."""


def _accepts(factory: Callable, name: str) -> bool:
    """True only if ``factory`` declares a parameter ``name``.

    A factory that only takes ``**kwargs`` (common for PettingZoo ``env(**kwargs)``
    wrappers) is not assumed to understand ``num_agents``/``max_steps``/``map_seed``:
    passing them would fail every episode, so ``-c``/``--map-seed`` are refused up front
    and ``-s`` only caps the rollout.
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    p = sig.parameters.get(name)
    return p is not None and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


@dataclass(frozen=True)
class Mission:
    """A cooperative multi-agent mission.

    ``factory(**params)`` returns a fresh PettingZoo ``ParallelEnv``. ``source`` says
    where the mission came from (``"builtin"``, a file path or ``module:attr``) so a
    worker process can load it again by name instead of receiving pickled code.
    """

    name: str
    factory: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, Variant] = field(default_factory=dict)
    description: str = ""
    source: str = "builtin"
    applied: tuple[str, ...] = ()
    num_agents: int = 0
    max_steps: int = 0

    def accepts(self, name: str) -> bool:
        """Whether the env factory declares the parameter ``name``."""
        return _accepts(self.factory, name)

    def make_env(self, **extra: Any):
        """Create a fresh env; ``extra`` (e.g. ``map_seed``) is passed when the factory takes it."""
        kwargs = dict(self.params)
        for key, value in extra.items():
            if value is not None and _accepts(self.factory, key):
                kwargs[key] = value
        return self.factory(**kwargs)

    def with_variants(
        self,
        variants: tuple[str, ...] = (),
        cogs: int | None = None,
        steps: int | None = None,
    ) -> Mission:
        """Return this mission with ``variants`` applied in order, then ``--cogs``/``--steps``."""
        params = dict(self.params)
        for name in variants:
            if name not in self.variants:
                known = ", ".join(sorted(self.variants)) or "none"
                raise MissionError(
                    f"mission {self.name!r} has no variant {name!r} (variants: {known}); "
                    "run `cogames missions` to list them"
                )
            v = self.variants[name]
            params = dict(v(params)) if callable(v) else {**params, **dict(v)}
        max_steps = self.max_steps
        num_agents = self.num_agents
        if cogs is not None:
            if cogs < 1:
                raise MissionError(f"--cogs must be >= 1, got {cogs}")
            if not _accepts(self.factory, "num_agents"):
                raise MissionError(
                    f"mission {self.name!r} does not take num_agents, so --cogs cannot change it"
                )
            params["num_agents"] = cogs
        if steps is not None:
            if steps < 1:
                raise MissionError(f"--steps must be >= 1, got {steps}")
            if _accepts(self.factory, "max_steps"):
                params["max_steps"] = steps
            max_steps = steps  # also caps the rollout for envs that ignore it
        if "num_agents" in params:
            num_agents = int(params["num_agents"])
        elif variants or num_agents == 0:
            num_agents = probe_num_agents(self.factory, params)
        if "max_steps" in params and steps is None:
            max_steps = int(params["max_steps"])
        return Mission(
            name=self.name,
            factory=self.factory,
            params=params,
            variants=self.variants,
            description=self.description,
            source=self.source,
            applied=self.applied + tuple(variants),
            num_agents=num_agents,
            max_steps=max_steps,
        )


def probe_num_agents(factory: Callable, params: Mapping[str, Any]) -> int:
    """Build the env once to count its agents (for user envs that do not say)."""
    env = factory(**params)
    try:
        n = len(env.possible_agents)
    finally:
        close = getattr(env, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # a probe env; episodes report close errors
                close()
    return n


@dataclass(frozen=True)
class MissionRef:
    """Picklable handle to a mission: enough for a worker to rebuild it by name."""

    source: str
    name: str
    variants: tuple[str, ...] = ()
    cogs: int | None = None
    steps: int | None = None

    def label(self) -> str:
        return self.name + "".join(f"+{v}" for v in self.variants)
