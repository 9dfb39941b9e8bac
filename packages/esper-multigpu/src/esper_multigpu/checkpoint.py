"""PPO checkpoints: the policy, its optimizer, the observation normaliser and how far the run got.

A checkpoint holds only tensors and plain Python values, and is read with
``torch.load(weights_only=True)``: loading a file cannot run code. Progress is counted in
*episodes* (``--episodes`` is the total), so a run can resume with a different
``--n-envs`` or different ``--devices``: episode k always trains the same host (its seed
belongs to the episode), only the grouping into PPO batches changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from parallel_core.io import atomic_write

CHECKPOINT_VERSION = 2
#: settings a resumed run must share with the checkpoint (they define the policy's input and task)
_MUST_MATCH = ("task", "slots", "max_epochs", "seed")


class CheckpointError(ValueError):
    pass


def save_checkpoint(
    path: str | Path, agent, cfg, next_batch: int, episodes_done: int, history: list
) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "agent": agent.state_dict(),
        "config": {k: getattr(cfg, k) for k in _MUST_MATCH} | {"width": cfg.env.width},
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
        raise CheckpointError(f"--resume: checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"--resume: checkpoint {p} cannot be read safely: {first}") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"--resume: {p} is not an esper checkpoint (version {CHECKPOINT_VERSION})"
        )
    have_cfg = state["config"]
    want = {k: getattr(cfg, k) for k in _MUST_MATCH} | {"width": cfg.env.width}
    for key, value in want.items():
        if have_cfg.get(key) != value:
            raise CheckpointError(
                f"--resume: checkpoint {p} was trained with {key}={have_cfg.get(key)!r} "
                f"but this run has {key}={value!r}"
            )
    return state
