"""Run configuration: pydantic v2 models, YAML/TOML files and ``section.key=value`` overrides.

One configuration library (pydantic) does the typing and the error messages. Numbers are
accepted wherever a number is expected in any notation a user types: ``5e-4``, ``1e4``,
``0.0005``, ``20_000``. YAML 1.1 (PyYAML) reads ``5e-4`` as a *string*, so every numeric
field first goes through :func:`_number`, which turns numeric strings into numbers; ``1e4``
is a valid integer, ``1.5`` is not.

Torch-free on purpose: the CLI validates its arguments before importing torch.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from parallel_core.devices import DeviceError, precheck_devices

from .errors import ConfigError
from .games import SORREL_PREFIX

_NUMBER = re.compile(r"^[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Any:
    """Numeric strings (``"5e-4"``, ``"1e4"``, ``"20_000"``) -> int or float; others unchanged."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return float(text)
    return value


def _integer(value: Any) -> Any:
    """Like :func:`_number`, and an integral float (``1e4``) becomes an int."""
    value = _number(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


Float = Annotated[float, BeforeValidator(_number)]
Int = Annotated[int, BeforeValidator(_integer)]


def parse_int(text: str) -> int:
    """An integer from the command line, scientific notation included (``--epochs 1e3``)."""
    value = _integer(text)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not an integer: {text!r}")
    return value


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=False)


class GameConfig(_Section):
    """Which game and its options (the GemGrid options are ignored by other games)."""

    name: str = "gemgrid"
    # None = the game's own default (GemGrid: 4). Games with a fixed agent count reject others.
    agents: Int | None = None
    size: Int = 9
    gems: Int = 8
    walls: Int = 6
    view_radius: Int = 3
    max_turns: Int = 50
    respawn_delay: Int = 5
    execution: str = "simultaneous"  # or "sequential": see games/base.py
    layout_seed: Int = 0
    options: dict = Field(default_factory=dict)  # keyword arguments for the game factory


class DQNConfig(_Section):
    """Double DQN hyper-parameters, identical for every (independent) agent."""

    hidden: list[Int] = Field(default_factory=lambda: [64, 64])
    lr: Float = 1e-3
    gamma: Float = 0.95
    batch_size: Int = 64
    buffer_size: Int = 20000
    learning_starts: Int = 500  # environment steps before the first update
    target_update: Int = 200  # updates between target-network syncs
    eps_start: Float = 1.0
    eps_end: Float = 0.05
    eps_decay_steps: Int = 5000  # environment steps of the linear epsilon decay
    huber_delta: Float = 1.0
    grad_clip: Float = 10.0


class ParallelConfig(_Section):
    """Which execution layers are on. All off = the plain sequential loop."""

    parallel_actions: bool = False  # one batched forward for all agents' actions
    parallel_training: bool = False  # all agents' train steps run concurrently
    async_learning: bool = False  # a learner trains beside collection
    # where the async learner runs: "process" (own interpreter, no shared GIL; parameters
    # come back through shared memory) or "thread" (same process, shares the GIL)
    learner: str = "process"
    # learner processes (learner=process): each owns a fixed block of agents; 0 = one per
    # available core, at most one per agent
    learners: Int = 0
    # async learner in lockstep: acting waits for every due round, so runs are bit-identical
    # to the sequential loop (the learner still trains in its own process)
    deterministic: bool = False
    train_interval: Int = 4  # env steps between training rounds (sync), and the async slack
    replay_ratio: Float = 0.25  # gradient updates per agent per environment step
    num_workers: Int = 0  # threads for parallel training; 0 = available cores
    snapshot_interval: Int = 1  # learner rounds between policy snapshots for acting (async)
    # learner processes: rounds the collector may run ahead of the slowest learner before it
    # waits (the bound on the lag; the replay ratio itself is exact). 0 = auto: 4 intervals'
    # worth of rounds, so a learner never starves while the collector waits for another.
    max_lag: Int = 0
    acting_backend: str = "bmm"  # batched acting kernel: "bmm" (fast) or "vmap" (any network)
    training_backend: str = "batched"  # parallel training: "batched" (one bmm pass) or "threads"
    # sorrel games: worker processes that each play whole episodes on their own copy of the
    # sorrel environment (parallel collection); 0 = sorrel's own loop in this process.
    env_workers: Int = 0


class RunConfig(_Section):
    """Budget, seeds, logging and checkpoints."""

    epochs: Int = 20
    episodes_per_epoch: Int = 10
    seed: Int = 0
    eval_episodes: Int = 10
    eval_every: Int = 5  # epochs between greedy evaluations (the last epoch is always evaluated)
    checkpoint_every: Int = 1  # epochs between checkpoints (the last epoch always writes one)
    tensorboard: bool = True
    torch_threads: Int = 1
    # where the networks live, act and learn: cpu or cuda:N (GemGrid and PettingZoo games;
    # sorrel's models too). Buffers stay in host memory; minibatches move per update.
    device: str = "cpu"
    out: str = ""  # run directory; "" = runs/<game>-<timestamp>


class Config(_Section):
    game: GameConfig = Field(default_factory=GameConfig)
    dqn: DQNConfig = Field(default_factory=DQNConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        cfg = cls()
        apply_mapping(cfg, data)
        return cfg


SECTIONS = ("game", "dqn", "parallel", "run")


def _first_error(where: str, err: ValidationError, value: Any) -> ConfigError:
    """One line from pydantic's report: which key, what it must be, what it got."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e.get("loc", ())[1:])
    key = f"{where}.{loc}" if loc else where
    msg = e.get("msg", "invalid value").removeprefix("Input should be").strip()
    msg = msg.split(", got ")[0]
    return ConfigError(f"{key} must be {msg}, got {value!r}")


def set_key(cfg: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` to ``value``; strings for non-string keys are parsed as YAML."""
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key:
        raise ConfigError(
            f"bad config key {dotted!r}: use section.key with section one of {', '.join(SECTIONS)}"
        )
    sub = getattr(cfg, section)
    names = list(type(sub).model_fields)
    if key not in names:
        raise ConfigError(
            f"unknown config key {dotted!r}; valid {section} keys: {', '.join(names)}"
        )
    annotation = type(sub).model_fields[key].annotation
    if isinstance(value, str) and annotation is not str:
        try:  # lists, mappings, booleans written on the command line: `dqn.hidden=[128,128]`
            value = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as err:
            raise ConfigError(f"{dotted}: cannot parse {value!r}") from err
    try:
        setattr(sub, key, value)
    except ValidationError as err:
        raise _first_error(dotted, err, value) from None


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
        raise ConfigError(f"bad override {text!r}: write section.key=value, e.g. dqn.lr=5e-4")
    return key.strip(), value


def validate(cfg: Config) -> None:
    """Cross-field checks that the field types cannot express."""
    p, d, r, g = cfg.parallel, cfg.dqn, cfg.run, cfg.game
    checks = [
        (g.agents is None or g.agents >= 1, "game.agents must be >= 1"),
        (p.train_interval >= 1, "parallel.train_interval must be >= 1"),
        (p.replay_ratio > 0, "parallel.replay_ratio must be > 0"),
        (p.num_workers >= 0, "parallel.num_workers must be >= 0 (0 = available cores)"),
        (p.learner in ("process", "thread"), "parallel.learner must be 'process' or 'thread'"),
        (p.learners >= 0, "parallel.learners must be >= 0 (0 = one per available core)"),
        (p.env_workers >= 0, "parallel.env_workers must be >= 0 (0 = collect in this process)"),
        (p.snapshot_interval >= 1, "parallel.snapshot_interval must be >= 1"),
        (p.max_lag >= 0, "parallel.max_lag must be >= 0 (0 = auto)"),
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
        (len(d.hidden) >= 1 and all(h > 0 for h in d.hidden), "dqn.hidden must be a list of positive integers"),
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
        (
            g.execution in ("simultaneous", "sequential"),
            "game.execution must be 'simultaneous' or 'sequential'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if g.name.startswith(SORREL_PREFIX) and r.device != "cpu":
        raise ConfigError(
            f"--device {r.device}: sorrel's examples build their models on the CPU "
            "(device='cpu' in their setup_agents); --device applies to GemGrid and PettingZoo games"
        )
    try:  # torch-free: a wrong --device answers before the torch import
        r.device = precheck_devices([r.device], "--device")[0]
    except DeviceError as err:
        raise ConfigError(str(err)) from None


def game_kwargs(cfg: GameConfig) -> dict:
    """Keyword arguments for the game factory named by ``cfg.name`` (``game.agents`` apart)."""
    if cfg.name in ("gemgrid", "gemgrid-pettingzoo"):
        return {
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
