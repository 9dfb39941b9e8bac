"""The run configuration: defaults < config file (strict) < command-line flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .kasmina.host import SLOT_NAMES
from .kasmina.slot import Gates
from .simic.ppo import PPOConfig
from .simic.rewards import RewardConfig
from .tamiyo.heuristic import HeuristicConfig
from .tolaria.env import EnvConfig


class ConfigError(ValueError):
    """A config file or value that cannot be used (unknown key, wrong type)."""


@dataclass
class TrainConfig:
    mode: str = "ppo"  # ppo | heuristic
    task: str = "digits"
    data_dir: str | None = None
    devices: list[str] | None = None  # None -> parallel_core.devices.default_device()
    device_strategy: str = "round_robin"
    policy_device: str | None = None  # None -> the first device
    n_envs: int = 4
    episodes: int = 4
    max_epochs: int = 25
    slots: list[str] = field(default_factory=lambda: list(SLOT_NAMES))
    amp: str = "off"
    seed: int = 42
    cpu_threads: int | None = None  # torch intra-op threads per CPU device group; None -> 1
    telemetry_dir: str | None = "esper-telemetry"
    save: str | None = None
    resume: str | None = None
    quiet: bool = False
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    gates: Gates = field(default_factory=Gates)
    heuristic: HeuristicConfig = field(default_factory=HeuristicConfig)

    def env_config(self) -> EnvConfig:
        return dataclasses.replace(self.env, max_epochs=self.max_epochs)


_NESTED = {
    "env": EnvConfig,
    "ppo": PPOConfig,
    "reward": RewardConfig,
    "gates": Gates,
    "heuristic": HeuristicConfig,
}
_TOP = {f.name for f in dataclasses.fields(TrainConfig)} - {"mode"}


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} (valid keys: {', '.join(sorted(allowed))})"
            )


def read_config_file(path: str | Path) -> dict:
    """Parse a YAML or JSON config file and check every key (unknown keys are errors)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise ConfigError(
            f"config file {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    _check_keys(str(p), data, _TOP)
    for name, cls in _NESTED.items():
        if name in data:
            if not isinstance(data[name], dict):
                raise ConfigError(f"{p}: {name} must be a mapping")
            _check_keys(f"{p}: {name}", data[name], {f.name for f in dataclasses.fields(cls)})
    return data


def build_config(
    mode: str, file_values: dict | None = None, overrides: dict | None = None
) -> TrainConfig:
    """A :class:`TrainConfig` for ``mode`` from config-file values, then explicit flag values."""
    cfg = TrainConfig(mode=mode)
    if mode == "heuristic":  # the baseline is one environment by default
        cfg.n_envs, cfg.episodes = 1, 1
    merged = dict(file_values or {})
    for k, v in (overrides or {}).items():
        if v is not None:
            if k in _NESTED and k in merged:
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
    for key, value in merged.items():
        if key in _NESTED:
            current = getattr(cfg, key)
            try:
                setattr(cfg, key, dataclasses.replace(current, **value))
            except TypeError as exc:
                raise ConfigError(f"{key}: {exc}") from exc
        else:
            setattr(cfg, key, value)
    _validate(cfg)
    return cfg


#: expected JSON/YAML types of the top-level keys (None = may be null)
_TOP_TYPES: dict[str, tuple] = {
    "task": (str,),
    "data_dir": (str, None),
    "devices": (list, None),
    "device_strategy": (str,),
    "policy_device": (str, None),
    "n_envs": (int,),
    "episodes": (int,),
    "max_epochs": (int,),
    "slots": (list,),
    "amp": (str,),
    "seed": (int,),
    "cpu_threads": (int, None),
    "telemetry_dir": (str, None),
    "save": (str, None),
    "resume": (str, None),
    "quiet": (bool,),
}


def _type_ok(value: object, allowed: tuple) -> bool:
    if value is None:
        return None in allowed
    if isinstance(value, bool):  # YAML `true` is not a number
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return any(t is not None and isinstance(value, t) for t in allowed)


def _type_name(allowed: tuple) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "a mapping", None: "null"}
    return " or ".join(names.get(t, str(t)) for t in allowed)


def _check_types(cfg: TrainConfig) -> None:
    """Wrong value types are usage errors (one clear line), not tracebacks later in the run."""
    for key, allowed in _TOP_TYPES.items():
        value = getattr(cfg, key)
        if not _type_ok(value, allowed):
            raise ConfigError(f"{key} must be {_type_name(allowed)}; got {value!r}")
    for key in ("devices", "slots"):
        items = getattr(cfg, key) or []
        if not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{key} must be a list of strings; got {items!r}")
    for section, cls in _NESTED.items():
        current, defaults = getattr(cfg, section), cls()
        for f in dataclasses.fields(cls):
            default = getattr(defaults, f.name)
            allowed = (float,) if isinstance(default, float) else (type(default),)
            value = getattr(current, f.name)
            if not _type_ok(value, allowed):
                raise ConfigError(
                    f"{section}.{f.name} must be {_type_name(allowed)}; got {value!r}"
                )


def _validate(cfg: TrainConfig) -> None:
    _check_types(cfg)
    env, ppo = cfg.env, cfg.ppo
    for name, value in (
        ("env.batch_size", env.batch_size),
        ("env.eval_chunk", env.eval_chunk),
        ("env.counterfactual_samples", env.counterfactual_samples),
        ("ppo.update_epochs", ppo.update_epochs),
        ("ppo.minibatch_envs", ppo.minibatch_envs),
        ("ppo.hidden", ppo.hidden),
        ("gates.blend_epochs", cfg.gates.blend_epochs),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1; got {value}")
    if env.width < 4 or env.width % 4:
        raise ConfigError(
            f"width must be a positive multiple of 4 (the attention blueprint uses 4 heads); got {env.width}"
        )
    for name, value in (
        ("env.host_lr", env.host_lr),
        ("env.seed_lr", env.seed_lr),
        ("ppo.lr", ppo.lr),
    ):
        if not value > 0:
            raise ConfigError(f"{name} (learning rate) must be > 0; got {value}")
    if cfg.n_envs < 1 or cfg.episodes < 1 or cfg.max_epochs < 2:
        raise ConfigError("n_envs and episodes must be >= 1 and max_epochs >= 2")
    bad = [s for s in cfg.slots if s not in SLOT_NAMES]
    if bad or not cfg.slots:
        raise ConfigError(
            f"slots must be a non-empty subset of {', '.join(SLOT_NAMES)}; got {cfg.slots}"
        )
    if cfg.amp not in ("off", "bf16", "fp16"):
        raise ConfigError(f"amp must be off, bf16 or fp16; got {cfg.amp!r}")
    if cfg.device_strategy not in ("round_robin", "balanced"):
        raise ConfigError(
            f"device_strategy must be round_robin or balanced; got {cfg.device_strategy!r}"
        )
