"""PPO checkpoints: the policy, its optimizer, the observation normaliser and where the run stopped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from parallel_core.io import atomic_write

CHECKPOINT_VERSION = 1
#: settings a resumed run must share with the checkpoint (they define the policy's input and task)
_MUST_MATCH = ("task", "slots", "max_epochs", "n_envs", "seed")


class CheckpointError(ValueError):
    pass


def save_checkpoint(
    path: str | Path, agent, cfg, next_batch: int, episodes_done: int, history: list
) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "agent": agent.state_dict(),
        "config": {k: getattr(cfg, k) for k in _MUST_MATCH},
        "ppo": dataclasses.asdict(cfg.ppo),
        "next_batch": next_batch,
        "episodes_done": episodes_done,
        "history": history,
    }
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, cfg) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{p} is not an esper checkpoint (version {CHECKPOINT_VERSION})")
    for key in _MUST_MATCH:
        have, want = state["config"][key], getattr(cfg, key)
        if have != want:
            raise CheckpointError(
                f"checkpoint {p} was trained with {key}={have!r} but this run has {key}={want!r}"
            )
    return state
