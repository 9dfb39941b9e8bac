"""PPO checkpoints: the policy, its optimizer, the observation normaliser and how far the run got.

A checkpoint holds only tensors and plain Python values, and is read with
``torch.load(weights_only=True)``: loading a file cannot run code. Progress is counted in
*episodes* (``--episodes`` is the total), so a run can resume with a different
``--n-envs`` or different ``--devices``: episode k always trains the same host (its seed
belongs to the episode), only the grouping into PPO batches changes.

A **policy file** (``--kept-policy``, :func:`save_policy`) holds the kept policy (the
agent's state), the settings it was trained and is scored under
(:func:`esper_multigpu.config.training_settings`) and how it was chosen; ``esper eval ppo
--policy FILE`` reads it, or a checkpoint (its last policy), with :func:`load_policy`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from parallel_core.io import atomic_write

CHECKPOINT_VERSION = 2
POLICY_FORMAT = "esper.policy/1"
#: settings a resumed run must share with the checkpoint (they define the policy's input and task)
_MUST_MATCH = ("task", "slots", "max_epochs", "seed")


class CheckpointError(ValueError):
    pass


def save_checkpoint(
    path: str | Path, agent, cfg, next_batch: int, episodes_done: int, history: list, selection: dict | None = None
) -> None:
    """``selection``: the kept-policy choice so far (``PolicySelector.state_dict``)."""
    from .config import training_settings

    state = {
        "version": CHECKPOINT_VERSION,
        "agent": agent.state_dict(),
        "config": {k: getattr(cfg, k) for k in _MUST_MATCH} | {"width": cfg.env.width},
        "ppo": dataclasses.asdict(cfg.ppo),
        "next_batch": next_batch,
        "episodes_done": episodes_done,
        "history": history,
        "train_config": training_settings(cfg),
        "selection": selection,
    }
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def save_policy(path: str | Path, agent_state: dict, cfg, kept: dict) -> None:
    """Write a policy file atomically: the agent's state, the training settings and
    ``kept`` (rule, batch, validation scores)."""
    from .config import training_settings

    state = {"format": POLICY_FORMAT, "agent": agent_state, "config": training_settings(cfg), "kept": kept}
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def _load_failure(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words. torch's own text
    for a file that is not a torch file advises ``weights_only=False``, which would run
    code from the file: never the advice for a file of unknown origin."""
    text = " ".join(str(exc).split())
    if text.startswith("Weights only load failed"):
        return "not a torch file, or it holds objects a weights-only load refuses"
    return text[:200]


def load_policy(path: str | Path, flag: str = "--policy") -> dict:
    """``{"agent", "config", "kept"}`` from a policy file or a checkpoint (its last
    policy); :class:`CheckpointError` naming ``flag`` when it is neither. An unreadable
    file raises ``OSError``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{flag}: {p} does not exist")
    with open(p, "rb"):  # PermissionError etc. as OSError (exit 1), not as "not a policy"
        pass
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{flag}: {p} is not an esper policy file or checkpoint ({_load_failure(exc)})") from exc
    if isinstance(state, dict) and state.get("format") == POLICY_FORMAT:
        return {"agent": state["agent"], "config": state["config"], "kept": state["kept"], "source": "policy"}
    if isinstance(state, dict) and state.get("version") == CHECKPOINT_VERSION and "agent" in state:
        if "train_config" not in state:
            raise CheckpointError(
                f"{flag}: checkpoint {p} predates stored training settings; evaluate a policy file (--kept-policy) "
                "or a checkpoint saved by this version"
            )
        kept = {"rule": "last", "batch": state["next_batch"]}
        return {"agent": state["agent"], "config": state["train_config"], "kept": kept, "source": "checkpoint"}
    raise CheckpointError(f"{flag}: {p} is not an esper policy file ({POLICY_FORMAT}) or checkpoint")


def load_checkpoint(path: str | Path, cfg) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"--resume: checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"--resume: checkpoint {p} cannot be read safely: {_load_failure(exc)}") from exc
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
