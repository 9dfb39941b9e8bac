"""The run configuration: defaults < config file (strict) < command-line flags.

Every section is a pydantic dataclass (one configuration library, strict types, ranges
declared next to the fields), so a wrong key, type or range is one clear line before any
work starts. This module imports neither torch nor numpy: the CLI checks a whole
configuration in well under a second, before the heavy imports.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

#: Slot names in forward order; observations and telemetry always use this order.
SLOT_NAMES: tuple[str, ...] = ("early", "mid", "late")
TASKS: tuple[str, ...] = ("digits", "cifar10", "synthetic")
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
BLEND_SCHEDULES: tuple[str, ...] = ("linear", "sigmoid")
BLUEPRINT_NAMES: tuple[str, ...] = (
    "noop",
    "norm",
    "attention",
    "depthwise",
    "conv_light",
    "conv_heavy",
)

_STRICT = ConfigDict(extra="forbid", strict=True)
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class ConfigError(ValueError):
    """A config file or value that cannot be used (unknown key, wrong type, out of range)."""


@dataclass(frozen=True, config=_STRICT)
class EnvConfig:
    """One environment: the host's training and how it is measured."""

    max_epochs: Annotated[int, Field(ge=2)] = 12
    batch_size: PosInt = 64
    host_lr: PosFloat = 1e-3
    seed_lr: PosFloat = 1e-3
    #: channels of the host's first stage; 4 (1.7k parameters) is deliberately too small
    #: for digits, so that growth has something to add (docs/esper-multigpu.md, "Tasks")
    width: Annotated[int, Field(ge=4, multiple_of=4)] = 4
    grad_clip: PosFloat = 5.0
    #: optimisation steps per epoch; None = one pass over the training set. Only
    #: ``PARALLEL_RL_SMOKE=1`` lowers it (to 4), so a smoke run takes the same code path in seconds
    train_batches: PosInt | None = None
    #: validation samples used for the per-slot counterfactual evaluations (all when smaller)
    counterfactual_samples: PosInt = 2048
    eval_chunk: PosInt = 512


@dataclass(frozen=True, config=_STRICT)
class Gates:
    """Thresholds of the lifecycle gates (G1..G4)."""

    #: G2: epochs a seed trains in isolation before it may blend.
    min_training_epochs: NonNegInt = 2
    #: G2: fraction of the last epoch's batches whose seed gradient was finite, not
    #: vanishing (< grad_vanish) and not exploding (> grad_explode).
    min_grad_health: Fraction = 0.5
    grad_vanish: NonNegFloat = 1e-7
    grad_explode: PosFloat = 1e2
    #: G3: epochs the alpha schedule takes to go from 0 to 1.
    blend_epochs: PosInt = 3
    #: G4: epochs at alpha = 1 before a seed may be fossilised (so its counterfactual is measured).
    min_probation_epochs: NonNegInt = 1
    #: G4: a seed is fossilised only if its counterfactual contribution exceeds this.
    min_contribution: Annotated[float, Field(ge=-1, le=1)] = 0.0

    def __post_init__(self) -> None:
        if self.grad_vanish >= self.grad_explode:
            raise ValueError(
                f"gates.grad_vanish ({self.grad_vanish}) must be below gates.grad_explode ({self.grad_explode})"
            )


@dataclass(frozen=True, config=_STRICT)
class PPOConfig:
    lr: PosFloat = 1e-3
    gamma: Fraction = 0.99
    gae_lambda: Fraction = 0.95
    clip: PosFloat = 0.2
    vf_coef: NonNegFloat = 0.5
    ent_coef: NonNegFloat = 0.01
    #: the entropy coefficient at the end of the run, reached linearly from ``ent_coef``
    #: (explore early, commit late); None keeps ``ent_coef`` throughout
    ent_coef_final: NonNegFloat | None = None
    #: CleanRL's ``anneal_lr``: the learning rate falls linearly from ``lr`` to 0 over the run
    anneal_lr: bool = False
    #: CleanRL's ``NormalizeReward``: rewards divided by the running std of the discounted return
    norm_reward: bool = False
    #: CleanRL's ``norm_adv``: advantages standardised per minibatch. With few episodes
    #: per batch that discards the critic's baseline (when all take the same bad action,
    #: half still get a positive advantage), so ``False`` keeps them as GAE gives them
    #: (use with ``norm_reward``, which brings them to O(1))
    norm_adv: bool = True
    #: with ``norm_adv``: subtract the minibatch mean before dividing by the std (CleanRL).
    #: ``False`` only divides by the std, so the advantages stay relative to the critic's
    #: baseline (a batch that did worse than expected stays negative) at an O(1) scale
    norm_adv_center: bool = True
    #: the policy loss and the entropy bonus are means over the steps with a choice (more
    #: than one legal op) instead of over every step: a forced WAIT says nothing about the
    #: policy, and averaging over ~10 of them per decision diluted the entropy bonus ~5x
    choices_only: bool = False
    update_epochs: PosInt = 8
    minibatch_envs: PosInt = 4
    target_kl: PosFloat = 0.03
    max_grad_norm: PosFloat = 0.5
    hidden: PosInt = 128


@dataclass(frozen=True, config=_STRICT)
class RewardConfig:
    """Weights of the reward (simic/rewards.py)."""

    #: weight of the *added* accuracy: the grown model's minus the paired fixed host's
    added_weight: NonNegFloat = 1.0
    #: rent per epoch on the seed parameters alive or fossilised (``rent_shape`` of them)
    rent: NonNegFloat = 0.002
    #: ``log``: rent * log(1 + seed/host params), gentle on big seeds; ``linear``:
    #: rent * seed/host params, every parameter costs the same (simic/rewards.py)
    rent_shape: Literal["log", "linear"] = "log"


_Slot = Literal["early", "mid", "late"]


@dataclass(frozen=True, config=_STRICT)
class HeuristicConfig:
    """The heuristic baseline (tamiyo/heuristic.py). The slot order and the per-slot
    preferences come from the growth study in docs/esper-multigpu.md ("Tasks"): the
    middle stage is where the small host lacks capacity most (``conv_heavy`` in ``mid``:
    +14 points for 1,176 parameters), ``late`` next, ``early`` barely helps."""

    warmup_epochs: NonNegInt = 2
    germinate_interval: PosInt = 3
    cull_below: float = -0.01
    max_probation_epochs: PosInt = 3
    max_training_epochs: PosInt = 6
    blend: Literal["linear", "sigmoid"] = "sigmoid"
    preferences: dict[str, list[str] | tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: {
            "early": ("conv_light", "depthwise", "norm", "conv_heavy", "attention"),
            "mid": ("conv_heavy", "conv_light", "depthwise", "attention", "norm"),
            "late": ("attention", "conv_heavy", "conv_light", "depthwise", "norm"),
        }
    )
    #: the order in which empty slots are grown (the first empty enabled one is used)
    slot_order: list[_Slot] | tuple[_Slot, ...] = ("mid", "late", "early")

    def __post_init__(self) -> None:
        if len(set(self.slot_order)) != len(self.slot_order):
            raise ValueError(f"heuristic.slot_order: slots repeat in {list(self.slot_order)}")
        for slot, bps in self.preferences.items():
            if slot not in SLOT_NAMES:
                raise ValueError(f"heuristic.preferences: unknown slot {slot!r}")
            bad = [b for b in bps if b not in BLUEPRINT_NAMES]
            if bad or not bps:
                raise ValueError(
                    f"heuristic.preferences.{slot}: unknown blueprint(s) {bad} (choose from {', '.join(BLUEPRINT_NAMES)})"
                )


_NESTED = {
    "env": EnvConfig,
    "ppo": PPOConfig,
    "reward": RewardConfig,
    "gates": Gates,
    "heuristic": HeuristicConfig,
}


@dataclass(config=ConfigDict(extra="forbid", strict=True, validate_assignment=False))
class TrainConfig:
    mode: Literal["ppo", "heuristic", "fixed"] = "ppo"
    task: Literal["digits", "cifar10", "synthetic"] = "digits"
    data_dir: str | None = None
    devices: list[str] | None = None  # None -> parallel_core.devices.default_device()
    device_strategy: Literal["round_robin", "balanced"] = "round_robin"
    policy_device: str | None = None  # None -> the first device
    n_envs: PosInt = 4
    episodes: PosInt = 4
    max_epochs: Annotated[int, Field(ge=2)] = 12
    slots: list[Literal["early", "mid", "late"]] = dataclasses.field(
        default_factory=lambda: list(SLOT_NAMES)
    )
    #: at most this many seeds in the model at once (live or fossilised; a cull frees one);
    #: None = one per enabled slot. A growth budget every controller honours.
    max_seeds: PosInt | None = None
    #: the blueprints a controller may germinate; None = every blueprint but ``noop``
    blueprints: (
        list[Literal["noop", "norm", "attention", "depthwise", "conv_light", "conv_heavy"]] | None
    ) = None
    amp: Literal["off", "bf16", "fp16"] = "off"
    seed: NonNegInt = 42
    cpu_threads: PosInt | None = None  # torch intra-op threads per CPU device group; None -> 1
    telemetry_dir: str | None = "esper-telemetry"
    tensorboard: bool = True
    save: str | None = None
    resume: str | None = None
    #: which PPO policy the run keeps besides the checkpoint's last one (``selection.py``):
    #: ``last``; ``val``, the best mean return on ``val_episodes`` validation hosts of the
    #: root seed (episodes from ``selection.VAL_FIRST_EPISODE``), validated after every
    #: ``val_every`` updates and after the last; ``best``, the policy that earned the best
    #: mean training return of a batch. ``esper train ppo`` picks ``val`` when it has a file
    #: to write the kept policy to (``--save`` or ``--kept-policy``) and no rule is given
    keep_policy: Literal["last", "val", "best"] = "last"
    #: the kept policy's file (default with ``--save CKPT`` and a rule other than ``last``:
    #: ``CKPT`` with the suffix ``.kept.pt``)
    kept_policy: str | None = None
    val_every: PosInt = 2
    val_episodes: PosInt = 4
    #: how the policy acts on the validation hosts (as it will be evaluated)
    val_policy: Literal["greedy", "sample"] = "greedy"
    quiet: bool = False
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    gates: Gates = dataclasses.field(default_factory=Gates)
    heuristic: HeuristicConfig = dataclasses.field(default_factory=HeuristicConfig)

    def __post_init__(self) -> None:
        if not self.slots:
            raise ValueError("slots must name at least one of early, mid, late")
        if self.blueprints is not None and not self.blueprints:
            raise ValueError("blueprints must name at least one blueprint, e.g. [conv_heavy]")
        if self.devices is not None and not self.devices:
            raise ValueError("devices must name at least one device, e.g. [cpu]")

    def env_config(self) -> EnvConfig:
        return dataclasses.replace(self.env, max_epochs=self.max_epochs)

    def kept_policy_path(self) -> str | None:
        """Where the kept policy goes: ``kept_policy``, else (a rule other than ``last``
        with ``save``) the checkpoint's name with ``.kept.pt``; None: no file."""
        if self.kept_policy or self.keep_policy == "last" or not self.save:
            return self.kept_policy
        return str(Path(self.save).with_suffix(".kept.pt"))


#: the settings that define what a policy was trained on and how it is scored, kept in
#: policy files and checkpoints so ``esper eval`` evaluates under the same ones
#: (everything but where and how fast a run goes, its length and its files)
_NOT_TRAINING_SETTINGS = (
    "mode", "devices", "device_strategy", "policy_device", "n_envs", "episodes", "cpu_threads",
    "telemetry_dir", "tensorboard", "save", "resume", "keep_policy", "kept_policy", "val_every",
    "val_episodes", "val_policy", "quiet",
)  # fmt: skip


def training_settings(cfg: TrainConfig) -> dict:
    """The settings of ``cfg`` a policy file keeps (plain values: ``weights_only``-loadable)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_TRAINING_SETTINGS}


_TOP = {f.name for f in dataclasses.fields(TrainConfig)} - {"mode"}

#: the command-line flag of each config key, so an error names what the user typed
FLAGS = {
    "task": "--task",
    "data_dir": "--data-dir",
    "devices": "--devices",
    "device_strategy": "--device-strategy",
    "policy_device": "--policy-device",
    "n_envs": "--n-envs",
    "episodes": "--episodes",
    "max_epochs": "--max-epochs",
    "slots": "--slots",
    "max_seeds": "--max-seeds",
    "blueprints": "--blueprints",
    "amp": "--amp",
    "seed": "--seed",
    "cpu_threads": "--cpu-threads",
    "telemetry_dir": "--telemetry-dir",
    "save": "--save",
    "resume": "--resume",
    "keep_policy": "--keep-policy",
    "kept_policy": "--kept-policy",
    "val_every": "--val-every",
    "val_episodes": "--val-episodes",
    "val_policy": "--val-policy",
    "env.batch_size": "--batch-size",
    "env.width": "--width",
    "ppo.lr": "--lr",
}


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
        first = " ".join(str(exc).split())
        raise ConfigError(
            f"config file {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {first}"
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


def _describe(exc: ValidationError, prefix: str, flags: set[str]) -> str:
    """One line for the first problem, naming the flag when the value came from one."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not isinstance(x, int))
    key = f"{prefix}{loc}" if loc else prefix.rstrip(".")
    name = FLAGS[key] if key in flags and key in FLAGS else key
    msg = err["msg"]
    if msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    value = err.get("input")
    return f"{name}: {msg[0].lower()}{msg[1:]}; got {value!r}" if name else msg


def build_config(
    mode: str, file_values: dict | None = None, overrides: dict | None = None
) -> TrainConfig:
    """A :class:`TrainConfig` for ``mode`` from config-file values, then explicit flag values.

    Raises :class:`ConfigError` with one line naming the bad key (or flag) and value.
    """
    merged: dict = {}
    if mode in ("heuristic", "fixed"):  # the baselines are one environment by default
        merged.update(n_envs=1, episodes=1)
    merged.update(file_values or {})
    flags: set[str] = set()
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k in _NESTED:
            merged[k] = {**merged.get(k, {}), **v}
            flags.update(f"{k}.{kk}" for kk in v)
        else:
            merged[k] = v
            flags.add(k)
    sections = {}
    for name, cls in _NESTED.items():
        values = merged.pop(name, None) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{name} must be a mapping")
        try:
            sections[name] = cls(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, f"{name}.", flags)) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
    try:
        return TrainConfig(mode=mode, **merged, **sections)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "", flags)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
