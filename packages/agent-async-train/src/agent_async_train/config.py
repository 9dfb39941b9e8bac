"""Run configuration: nested dataclasses, YAML/TOML files and ``section.key=value`` overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class GameConfig:
    """Which game and its options (the GemGrid options are ignored by other games)."""

    name: str = "gemgrid"
    agents: int = 4
    size: int = 9
    gems: int = 8
    walls: int = 6
    view_radius: int = 3
    max_turns: int = 50
    respawn_delay: int = 5
    execution: str = "simultaneous"  # or "sequential": see games/base.py
    layout_seed: int = 0
    options: dict = field(default_factory=dict)  # keyword arguments for a user game factory


@dataclass
class DQNConfig:
    """Double DQN hyper-parameters, identical for every (independent) agent."""

    hidden: list = field(default_factory=lambda: [64, 64])
    lr: float = 1e-3
    gamma: float = 0.95
    batch_size: int = 64
    buffer_size: int = 20000
    learning_starts: int = 500  # environment steps before the first update
    target_update: int = 200  # updates between target-network syncs
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 5000  # environment steps of the linear epsilon decay
    huber_delta: float = 1.0
    grad_clip: float = 10.0


@dataclass
class ParallelConfig:
    """Which execution layers are on. All off = the plain sequential loop."""

    parallel_actions: bool = False  # one batched (vmap) forward for all agents' actions
    parallel_training: bool = False  # all agents' train steps run concurrently (threads)
    async_learning: bool = (
        False  # a background learner thread trains while the main thread collects
    )
    train_interval: int = 4  # env steps between training rounds (sync), and the async slack
    replay_ratio: float = 0.25  # gradient updates per agent per environment step
    num_workers: int = 0  # threads for parallel training; 0 = available cores
    snapshot_interval: int = 1  # learner rounds between policy snapshots for acting (async)
    acting_backend: str = "bmm"  # batched acting kernel: "bmm" (fast) or "vmap" (any network)
    training_backend: str = "batched"  # parallel training: "batched" (one bmm pass) or "threads"


@dataclass
class RunConfig:
    """Budget, seeds, logging and checkpoints."""

    epochs: int = 20
    episodes_per_epoch: int = 10
    seed: int = 0
    eval_episodes: int = 10
    eval_every: int = 5  # epochs between greedy evaluations (the last epoch is always evaluated)
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always writes one)
    tensorboard: bool = True
    torch_threads: int = 1
    out: str = ""  # run directory; "" = runs/<game>-<timestamp>


@dataclass
class Config:
    game: GameConfig = field(default_factory=GameConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        cfg = cls()
        apply_mapping(cfg, data)
        return cfg


SECTIONS = ("game", "dqn", "parallel", "run")


def _coerce(section: str, key: str, current: Any, value: Any) -> Any:
    """Convert ``value`` to the type of the default, with a clear error if it does not fit."""
    where = f"{section}.{key}"
    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: cannot parse {value!r}") from err
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(current, str):
        return str(value)
    if isinstance(current, list):
        if isinstance(value, list):
            return value
        raise ConfigError(f"{where} must be a list like [64, 64], got {value!r}")
    if isinstance(current, dict):
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{where} must be a mapping like {{a: 1}}, got {value!r}")
    return value


def set_key(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` to ``value`` (strings are parsed as YAML scalars)."""
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key:
        raise ConfigError(
            f"bad config key {dotted!r}: use section.key with section one of {', '.join(SECTIONS)}"
        )
    sub = getattr(cfg, section)
    names = [f.name for f in fields(sub)]
    if key not in names:
        raise ConfigError(
            f"unknown config key {dotted!r}; valid {section} keys: {', '.join(names)}"
        )
    setattr(sub, key, _coerce(section, key, getattr(sub, key), value))


def apply_mapping(cfg: Config, data: dict) -> None:
    """Apply a nested ``{section: {key: value}}`` mapping (from a file or a checkpoint)."""
    if not isinstance(data, dict):
        raise ConfigError(
            "a config file must hold a mapping of sections (game, dqn, parallel, run)"
        )
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r}; valid sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys")
        for key, value in values.items():
            set_key(cfg, f"{section}.{key}", value)


def load_file(path: str | Path) -> dict:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot parse config file {str(p)!r}: {err}".splitlines()[0]) from err


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"bad override {text!r}: write section.key=value, e.g. dqn.lr=0.0005")
    return key.strip(), value


def validate(cfg: Config) -> None:
    """Cross-field checks that the dataclass types cannot express."""
    p, d, r, g = cfg.parallel, cfg.dqn, cfg.run, cfg.game
    checks = [
        (g.agents >= 1, "game.agents must be >= 1"),
        (p.train_interval >= 1, "parallel.train_interval must be >= 1"),
        (p.replay_ratio > 0, "parallel.replay_ratio must be > 0"),
        (p.num_workers >= 0, "parallel.num_workers must be >= 0 (0 = available cores)"),
        (p.snapshot_interval >= 1, "parallel.snapshot_interval must be >= 1"),
        (p.acting_backend in ("bmm", "vmap"), "parallel.acting_backend must be 'bmm' or 'vmap'"),
        (
            p.training_backend in ("batched", "threads"),
            "parallel.training_backend must be 'batched' or 'threads'",
        ),
        (
            d.batch_size >= 1 and d.buffer_size >= d.batch_size,
            "dqn.buffer_size must be >= dqn.batch_size >= 1",
        ),
        (0 < d.gamma <= 1, "dqn.gamma must be in (0, 1]"),
        (d.lr > 0, "dqn.lr must be > 0"),
        (d.target_update >= 1, "dqn.target_update must be >= 1"),
        (
            0 <= d.eps_end <= 1 and 0 <= d.eps_start <= 1,
            "dqn.eps_start and dqn.eps_end must be in [0, 1]",
        ),
        (d.eps_decay_steps >= 0, "dqn.eps_decay_steps must be >= 0"),
        (d.learning_starts >= 0, "dqn.learning_starts must be >= 0"),
        (d.huber_delta > 0 and d.grad_clip > 0, "dqn.huber_delta and dqn.grad_clip must be > 0"),
        (
            all(isinstance(h, int) and h > 0 for h in d.hidden),
            "dqn.hidden must be a list of positive integers",
        ),
        (
            r.epochs >= 1 and r.episodes_per_epoch >= 1,
            "run.epochs and run.episodes_per_epoch must be >= 1",
        ),
        (
            r.eval_every >= 1 and r.checkpoint_every >= 1,
            "run.eval_every and run.checkpoint_every must be >= 1",
        ),
        (r.torch_threads >= 1, "run.torch_threads must be >= 1"),
        (r.eval_episodes >= 1, "run.eval_episodes must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def game_kwargs(cfg: GameConfig) -> dict:
    """Keyword arguments for the game factory named by ``cfg.name``."""
    if cfg.name in ("gemgrid", "gemgrid-pettingzoo"):
        return {
            "num_agents": cfg.agents,
            "size": cfg.size,
            "gems": cfg.gems,
            "walls": cfg.walls,
            "view_radius": cfg.view_radius,
            "max_turns": cfg.max_turns,
            "respawn_delay": cfg.respawn_delay,
            "execution": cfg.execution,
            "layout_seed": cfg.layout_seed,
            **cfg.options,
        }
    return dict(cfg.options)
