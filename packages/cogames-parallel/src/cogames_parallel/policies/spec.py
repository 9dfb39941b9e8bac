"""``-p`` policy specs: parsing, class resolution, building, and agent allocation."""

from __future__ import annotations

import importlib
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cogames_parallel.policies.base import PolicyEnvInfo, PolicyError, registry_entry

SPEC_HELP = "class=NAME_OR_PATH[,data=FILE][,proportion=N][,kw.KEY=VALUE], or NAME, or NAME:N"


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class PolicySpec:
    """A parsed ``-p`` argument. Picklable: workers rebuild the policy from it."""

    class_path: str
    data: str | None = None
    proportion: float = 1.0
    kwargs: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.class_path

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.class_path,
            "data": self.data,
            "proportion": self.proportion,
            "kwargs": dict(self.kwargs),
        }


def _proportion(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PolicyError(f"policy spec {spec!r}: proportion {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise PolicyError(f"policy spec {spec!r}: proportion must be > 0, got {text}")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_policy_spec(text: str) -> PolicySpec:
    """Parse ``class=...,data=...,proportion=...,kw.K=V``, ``NAME`` or ``NAME:N``."""
    text = text.strip()
    if not text:
        raise PolicyError(f"empty policy spec; expected {SPEC_HELP}")
    if "=" not in text:
        name, sep, tail = text.rpartition(":")
        if sep and (tail.replace(".", "", 1).isdigit() or registry_entry(name) is not None):
            # NAME:N (a registered NAME is never a module, so NAME:x is a bad proportion)
            return PolicySpec(class_path=name, proportion=_proportion(tail, text))
        if sep and _is_number(tail):  # NAME:-1, NAME:inf
            raise PolicyError(f"policy spec {text!r}: proportion must be > 0, got {tail}")
        return PolicySpec(class_path=text)
    fields: dict[str, Any] = {}
    kwargs: list[tuple[str, Any]] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PolicyError(
                f"policy spec {text!r}: {part!r} is not KEY=VALUE; expected {SPEC_HELP}"
            )
        if key.startswith("kw."):
            if not key[3:].isidentifier():
                raise PolicyError(f"policy spec {text!r}: {key!r} is not kw.<identifier>")
            kwargs.append((key[3:], _parse_value(value.strip())))
        elif key in ("class", "data", "proportion"):
            if key in fields:
                raise PolicyError(f"policy spec {text!r}: {key} given twice")
            fields[key] = value.strip()
        else:
            raise PolicyError(
                f"policy spec {text!r}: unknown key {key!r} (keys: class, data, proportion, kw.NAME)"
            )
    if not fields.get("class"):
        raise PolicyError(f"policy spec {text!r} has no class=; expected {SPEC_HELP}")
    return PolicySpec(
        class_path=fields["class"],
        data=fields.get("data") or None,
        proportion=_proportion(fields["proportion"], text) if "proportion" in fields else 1.0,
        kwargs=tuple(kwargs),
    )


def label_policies(specs: Sequence[PolicySpec]) -> list[PolicySpec]:
    """Give each spec a unique display name (``busy``, ``busy#2``, ...)."""
    out, seen = [], {}
    for s in specs:
        base = (
            s.class_path.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
            if registry_entry(s.class_path) is None
            else s.class_path
        )
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}#{seen[base]}"
        out.append(PolicySpec(s.class_path, s.data, s.proportion, s.kwargs, label))
    return out


def resolve_policy_class(class_path: str) -> type:
    """A registered short name, ``module:Class`` or ``module.Class`` -> the class."""
    entry = registry_entry(class_path)
    if isinstance(entry, type):
        return entry
    path = entry or class_path
    if ":" in path:
        modname, _, attr = path.partition(":")
    elif "." in path:
        modname, _, attr = path.rpartition(".")
    else:
        from cogames_parallel.policies.base import registered_policies

        names = ", ".join(sorted(registered_policies()))
        raise PolicyError(
            f"unknown policy {class_path!r}; registered: {names} (or give module:Class); "
            "run `cogames policies`"
        )
    try:
        if modname.endswith(".py"):  # path/to/file.py:Class
            from cogames_parallel.missions.loading import import_file

            module = import_file(modname, "cogames_user_policy")
        else:
            module = importlib.import_module(modname)
    except ImportError as exc:
        raise PolicyError(f"policy {class_path!r}: cannot import {modname!r}: {exc}") from exc
    except Exception as exc:
        raise PolicyError(f"policy {class_path!r}: importing {modname!r} failed: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PolicyError(f"policy {class_path!r}: {modname!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PolicyError(f"policy {class_path!r} is not a class or factory")
    return obj


def build_policy(spec: PolicySpec, env_info: PolicyEnvInfo):
    """Instantiate the policy of ``spec`` for a mission and load its data file, if any."""
    cls = resolve_policy_class(spec.class_path)
    try:
        policy = cls(env_info, **dict(spec.kwargs))
    except TypeError as exc:
        raise PolicyError(f"policy {spec.name}: bad options: {exc}") from exc
    if spec.data:
        policy.load_policy_data(spec.data)
    return policy


def validate_spec(spec: PolicySpec) -> None:
    """Fail fast in the main process on an unknown class, bad options or a missing data file."""
    import inspect
    from pathlib import Path

    cls = resolve_policy_class(spec.class_path)
    try:
        inspect.signature(cls).bind(None, **dict(spec.kwargs))
    except TypeError as exc:
        raise PolicyError(f"policy {spec.name}: bad options {dict(spec.kwargs)}: {exc}") from None
    except ValueError:  # no signature available (builtins): let the worker find out
        pass
    from cogames_parallel.policies.base import MultiAgentPolicy

    if spec.kwargs and getattr(cls, "__init__", None) is MultiAgentPolicy.__init__:
        # the base __init__ takes **kwargs only to reject them: say so now, not in every episode
        names = ", ".join("kw." + k for k, _ in spec.kwargs)
        raise PolicyError(f"policy {spec.name}: {cls.__name__} takes no options, got {names}")
    if spec.data and not Path(spec.data).expanduser().is_file():
        raise PolicyError(f"policy {spec.name}: data file {spec.data} does not exist")


def worker_unsafe_reason(spec: PolicySpec) -> str | None:
    """Why ``spec`` cannot be rebuilt in a worker process (None if it can)."""
    cls = resolve_policy_class(spec.class_path)
    if not getattr(cls, "worker_safe", True):
        return f"{getattr(cls, '__qualname__', cls)} sets worker_safe = False"
    try:
        if pickle.loads(pickle.dumps(cls)) is not cls:
            return "its class does not survive pickling"
        pickle.dumps(spec)
    except Exception as exc:  # local classes, lambdas, unpicklable kwargs
        return f"it cannot be pickled ({type(exc).__name__}: {exc})"
    return None


def allocate_agents(proportions: Sequence[float], n_agents: int) -> list[int]:
    """Split ``n_agents`` across policies by the largest-remainder method.

    Each policy gets ``floor(n * p_i / sum(p))``; leftover agents go to the largest
    fractional remainders, ties to the earlier policy. Counts always sum to ``n_agents``.
    """
    if not proportions:
        raise PolicyError("at least one policy is required")
    props = np.asarray(proportions, dtype=np.float64)
    if (props <= 0).any() or not np.isfinite(props).all():
        raise PolicyError(f"proportions must be positive and finite, got {list(proportions)}")
    quotas = props / props.sum() * n_agents
    counts = np.floor(quotas).astype(np.int64)
    remainders = quotas - counts
    left = n_agents - int(counts.sum())
    order = sorted(range(len(props)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        counts[i] += 1
    return [int(c) for c in counts]
