"""Resolving ``-m`` arguments: built-in names with shell wildcards, files, module paths."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cogames_parallel.missions.base import Mission, MissionError, MissionRef
from cogames_parallel.missions.builtin import BUILTIN_MISSIONS
from cogames_parallel.missions.gridworld import SITES, CoopGridEnv

# Rollouts of envs that neither take max_steps nor say how long they run stop here.
DEFAULT_STEP_CAP = 1000


def is_user_source(arg: str) -> bool:
    """True for a ``.py``/``.yaml`` path or a ``module:factory`` reference."""
    return (
        arg.endswith((".py", ".yaml", ".yml"))
        or os.sep in arg
        or (":" in arg and not any(ch in arg for ch in "*?["))
    )


def _from_factory(
    name: str, factory: Callable, source: str, params=None, variants=None, description: str = ""
) -> Mission:
    params = dict(params or {})
    env = factory(**params)
    try:
        agents = getattr(env, "possible_agents", None)
        if agents is None or not hasattr(env, "step") or not hasattr(env, "reset"):
            raise MissionError(
                f"mission {name!r}: factory returned {type(env).__name__}, "
                "not a PettingZoo ParallelEnv (needs possible_agents, reset, step)"
            )
        n = len(agents)
        steps = int(params.get("max_steps") or getattr(env, "max_steps", 0) or DEFAULT_STEP_CAP)
    finally:
        close = getattr(env, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # a probe env; episodes report close errors
                close()
    return Mission(
        name=name,
        factory=factory,
        params=params,
        variants=dict(variants or {}),
        description=description,
        source=source,
        num_agents=n,
        max_steps=steps,
    )


def import_file(path: str | Path, prefix: str):
    """Import a ``.py`` file under a stable name (cached in ``sys.modules``).

    A stable name per file lets classes defined in it pickle by reference inside
    forked workers, and two files with the same stem do not collide.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ImportError(f"{path} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    modname = f"{prefix}_{path.stem}_{digest}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _load_file_module(path: Path):
    try:
        return import_file(path, "cogames_user_mission")
    except Exception as exc:
        raise MissionError(
            f"mission file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def _missions_from_object(obj: Any, name: str, source: str) -> list[Mission]:
    if isinstance(obj, Mission):
        return [obj if obj.source == source else _resourced(obj, source)]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(m, Mission) for m in obj):
        return [_resourced(m, source) for m in obj]
    if callable(obj):
        made = obj()
        if isinstance(made, Mission):
            return [_resourced(made, source)]
        # the callable itself is the env factory; we built one env already, close it
        close = getattr(made, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # a probe env; episodes report close errors
                close()
        return [_from_factory(name, obj, source)]
    raise MissionError(f"{source}: expected a Mission, a list of Missions or an env factory")


def _resourced(m: Mission, source: str) -> Mission:
    from dataclasses import replace

    n = m.num_agents or len(m.make_env().possible_agents)
    return replace(m, source=source, num_agents=n, max_steps=m.max_steps or DEFAULT_STEP_CAP)


@lru_cache(maxsize=64)
def load_source(source: str) -> tuple[Mission, ...]:
    """Load the missions defined by a user source (cached per process)."""
    if source.endswith((".py", ".yaml", ".yml")) or os.sep in source:
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise MissionError(f"mission file {source} does not exist")
        if path.suffix == ".py":
            module = _load_file_module(path)
            for attr in ("MISSIONS", "MISSION"):
                if hasattr(module, attr):
                    return tuple(_missions_from_object(getattr(module, attr), path.stem, source))
            if hasattr(module, "make_env"):
                return (
                    _from_factory(
                        getattr(module, "NAME", path.stem),
                        module.make_env,
                        source,
                        getattr(module, "PARAMS", None),
                        getattr(module, "VARIANTS", None),
                        (module.__doc__ or "").strip().split("\n")[0],
                    ),
                )
            raise MissionError(
                f"mission file {source} defines none of MISSION, MISSIONS or make_env(**params)"
            )
        return (_from_yaml(path, source),)
    modname, _, attr = source.partition(":")
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        raise MissionError(f"cannot import mission module {modname!r}: {exc}") from exc
    if not hasattr(module, attr):
        raise MissionError(f"module {modname!r} has no attribute {attr!r}")
    return tuple(_missions_from_object(getattr(module, attr), source, source))


def _from_yaml(path: Path, source: str) -> Mission:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MissionError(f"mission file {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise MissionError(f"mission file {path} must hold a mapping")
    name = str(doc.get("name", path.stem))
    params = dict(doc.get("params") or {})
    variants = {str(k): dict(v or {}) for k, v in (doc.get("variants") or {}).items()}
    if "site" in doc:
        site = doc["site"]
        if site not in SITES:
            raise MissionError(
                f"mission file {path}: unknown site {site!r} (sites: {', '.join(SITES)})"
            )
        factory: Callable = CoopGridEnv
        params = {"num_agents": 4, "max_steps": 100, "site": site, **params}
    elif "factory" in doc:
        modname, _, attr = str(doc["factory"]).partition(":")
        try:
            factory = getattr(importlib.import_module(modname), attr)
        except (ImportError, AttributeError) as exc:
            raise MissionError(
                f"mission file {path}: cannot load factory {doc['factory']!r}: {exc}"
            ) from exc
    else:
        raise MissionError(
            f"mission file {path} needs either `site:` or `factory: module:function`"
        )
    try:
        return _from_factory(
            name, factory, source, params, variants, str(doc.get("description", ""))
        )
    except TypeError as exc:
        raise MissionError(f"mission file {path}: bad params: {exc}") from exc


def resolve_missions(patterns: Iterable[str]) -> list[Mission]:
    """Expand ``-m`` arguments (wildcards over built-ins, files, module paths), in order, deduplicated."""
    out: list[Mission] = []
    seen: set[tuple[str, str]] = set()
    for pat in patterns:
        if is_user_source(pat):
            found = list(load_source(pat))
        else:
            names = [n for n in BUILTIN_MISSIONS if fnmatch.fnmatchcase(n, pat)]
            if not names:
                # `harvest` alone means every harvest mission, like upstream's site names
                names = [n for n in BUILTIN_MISSIONS if n.split(".")[0] == pat]
            if not names:
                raise MissionError(
                    f"no mission matches {pat!r}; run `cogames missions` to list them "
                    f"(e.g. {next(iter(BUILTIN_MISSIONS))})"
                )
            found = [BUILTIN_MISSIONS[n] for n in names]
        for m in found:
            key = (m.source, m.name)
            if key not in seen:
                seen.add(key)
                out.append(m)
    return out


def base_mission(source: str, name: str) -> Mission:
    if source == "builtin":
        try:
            return BUILTIN_MISSIONS[name]
        except KeyError:
            raise MissionError(f"unknown built-in mission {name!r}") from None
    for m in load_source(source):
        if m.name == name:
            return m
    raise MissionError(f"{source} does not define a mission named {name!r}")


@lru_cache(maxsize=64)
def build_mission(ref: MissionRef) -> Mission:
    """Rebuild a mission from its picklable reference (cached per process)."""
    return base_mission(ref.source, ref.name).with_variants(ref.variants, ref.cogs, ref.steps)
