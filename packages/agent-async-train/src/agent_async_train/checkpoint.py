"""Checkpoints that resume a run exactly: weights, optimisers, buffers, RNG states, counters.

A checkpoint is one ``torch.save`` file written with ``atomic_write`` (temp file + rename),
so an interrupted save never damages the previous checkpoint.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from parallel_core.io import atomic_write

from .config import Config, ConfigError
from .errors import CheckpointError

FORMAT = "agent-async-train/checkpoint"
VERSION = 1


def save(path: str | Path, experiment) -> None:
    """Write ``experiment``'s full state to ``path`` (pauses a background learner meanwhile)."""
    learner = experiment.learner
    if learner is not None and hasattr(learner, "sync_agents"):
        # a learner process: bring its agents (weights, optimisers, RNGs) into ours first
        state = _state(experiment, learner.sync_agents())
    elif learner is not None:
        with learner.paused():
            state = _state(experiment, learner.rounds)
    else:
        state = _state(experiment, experiment.rounds)
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def _state(experiment, rounds: int) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": experiment.cfg.to_dict(),
        "epoch": experiment.epoch,
        "env_steps": experiment.env_steps,
        "episodes": experiment.episodes,
        "rounds": rounds,
        "history": list(experiment.history),
        "agents": [a.state_dict() for a in experiment.agents],
        "game": experiment.game.get_state(),
    }


SORREL_FORMAT = "agent-async-train/sorrel-checkpoint"  # written by sorrel_run.py
_SORREL_KEYS = {"config", "epoch", "episodes", "env_steps", "models", "rng"}


def read_file(path: str | Path) -> dict:
    """``torch.load`` a checkpoint file; a missing or corrupt file is a ``CheckpointError``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a checkpoint ({reason})"
        ) from err
    except ImportError as err:  # a sorrel checkpoint without the sorrel extra
        raise CheckpointError(
            f"checkpoint {str(p)!r} needs a missing package ({err}); for sorrel runs: "
            "pip install 'agent-async-train[sorrel]'"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(p)!r} is not an agent-train checkpoint")
    return state


def load(path: str | Path) -> dict:
    """Read and validate a checkpoint (GemGrid/PettingZoo or sorrel run); errors are
    ``CheckpointError`` with the reason."""
    p = Path(path)
    state = read_file(p)
    if state.get("format") == SORREL_FORMAT:
        missing = _SORREL_KEYS - set(state)
        if missing or state.get("version") != 1:
            raise CheckpointError(
                f"sorrel checkpoint {str(p)!r} is incomplete or of another version"
            )
        return state
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not an agent-train checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has format version {state.get('version')}, expected {VERSION}"
        )
    missing = {"config", "epoch", "env_steps", "episodes", "rounds", "agents", "game"} - set(state)
    if missing:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is incomplete (missing {', '.join(sorted(missing))})"
        )
    return state


def config_of(state: dict) -> Config:
    try:
        return Config.from_dict(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"checkpoint config is invalid: {err}") from err


def restore(experiment, state: dict) -> None:
    """Load ``state`` into a freshly built (not yet started) experiment."""
    if len(state["agents"]) != len(experiment.agents):
        raise CheckpointError(
            f"checkpoint has {len(state['agents'])} agents but the game has {len(experiment.agents)}"
        )
    try:
        for agent, agent_state in zip(experiment.agents, state["agents"]):
            agent.load_state_dict(agent_state)
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint does not match the configured networks/buffers: {err}"
        ) from err
    experiment.game.set_state(state["game"])
    experiment.epoch = int(state["epoch"])
    experiment.env_steps = int(state["env_steps"])
    experiment.episodes = int(state["episodes"])
    experiment.rounds = int(state["rounds"])
    experiment.history = list(state.get("history", []))
