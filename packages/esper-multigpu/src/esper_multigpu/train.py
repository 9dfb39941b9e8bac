"""The whole run: load the task, build the trainer, loop over batches, save, summarise."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable

from parallel_core.progress import progress_bar

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .simic.features import OBS_DIM
from .simic.vectorized import VectorizedTrainer
from .telemetry import TelemetrySink
from .tolaria.tasks import load_task


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def format_batch(rec: dict, n_batches: int) -> str:
    stages = " ".join(f"{k}:{v}" for k, v in sorted(rec["stage_counts"].items()) if k != "DORMANT")
    line = (
        f"batch {rec['batch'] + 1}/{n_batches} | envs {rec['n_envs']} | return {rec['mean_return']:+.3f} | "
        f"val_acc {rec['mean_final_val_acc']:.3f} | seeds {stages or '-'} | {rec['env_epochs_per_s']:.1f} env-epochs/s"
    )
    if rec.get("ppo"):
        p = rec["ppo"]
        line += f" | kl {p['approx_kl']:.1e} ent {p['entropy']:.2f}"
    return line


def run_training(
    cfg: TrainConfig, log: Callable[[str], None] = _stderr
) -> tuple[dict, VectorizedTrainer]:
    """Run ``cfg`` end to end; returns the JSON-able summary and the trainer (envs, agent)."""
    from parallel_core.devices import default_device, validate_devices

    if not cfg.devices:
        cfg.devices = [default_device()]
    cfg.devices = validate_devices(cfg.devices)  # fail fast: before loading data or checkpoints
    start_batch, episodes_done, history, resumed = 0, 0, [], None
    if cfg.resume:
        resumed = load_checkpoint(cfg.resume, cfg)
    task = load_task(cfg.task, cfg.data_dir, seed=cfg.seed)
    if not cfg.quiet:
        log(f"esper: task {task.describe()}")
    trainer = VectorizedTrainer(cfg, task, log)
    if resumed is not None:
        try:
            trainer.agent.load_state_dict(resumed["agent"])
        except (RuntimeError, KeyError, ValueError) as exc:  # e.g. a different ppo.hidden
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"checkpoint {cfg.resume} does not fit this run's policy ({first})"
            ) from exc
        start_batch, episodes_done, history = (
            resumed["next_batch"],
            resumed["episodes_done"],
            resumed["history"],
        )
        log(
            f"esper: resumed from {cfg.resume} at batch {start_batch} ({episodes_done} episodes done)"
        )
    n_batches = math.ceil(cfg.episodes / cfg.n_envs)
    name = cfg.mode
    t0 = time.perf_counter()
    with TelemetrySink(cfg.telemetry_dir, name) as sink:
        sink.write(
            "run",
            mode=cfg.mode,
            task=cfg.task,
            devices=list(trainer.devices),
            assignment=_counts(trainer.env_groups),
            policy_device=trainer.policy_device if trainer.agent else None,
            n_envs=cfg.n_envs,
            episodes=cfg.episodes,
            max_epochs=cfg.max_epochs,
            slots=list(cfg.slots),
            amp=cfg.amp,
            seed=cfg.seed,
            obs_dim=OBS_DIM,
            start_batch=start_batch,
        )
        total_epochs = max(0, n_batches - start_batch) * cfg.max_epochs
        with progress_bar(total_epochs, f"esper {cfg.mode}", quiet=cfg.quiet) as bar:
            for batch in range(start_batch, n_batches):
                n = min(cfg.n_envs, cfg.episodes - batch * cfg.n_envs)
                rec = trainer.run_batch(batch, n, sink, on_epoch=lambda: bar.advance(1))
                episodes_done += n
                history.append(
                    {
                        k: rec[k]
                        for k in ("batch", "mean_return", "mean_final_val_acc", "env_epochs_per_s")
                    }
                )
                if not cfg.quiet:
                    log(format_batch(rec, n_batches))
                if cfg.save and trainer.agent is not None:
                    save_checkpoint(cfg.save, trainer.agent, cfg, batch + 1, episodes_done, history)
    wall = time.perf_counter() - t0
    env_epochs = (episodes_done - (resumed["episodes_done"] if resumed else 0)) * cfg.max_epochs
    summary = {
        "mode": cfg.mode,
        "task": cfg.task,
        "devices": trainer.devices,
        "assignment": _counts(trainer.env_groups),
        "n_envs": cfg.n_envs,
        "episodes": episodes_done,
        "max_epochs": cfg.max_epochs,
        "slots": list(cfg.slots),
        "amp": cfg.amp,
        "seed": cfg.seed,
        "batches": history,
        "wall_s": wall,
        "env_epochs_per_s": env_epochs / wall if wall > 0 else 0.0,
        "telemetry": str(sink.path) if sink.path else None,
        "telemetry_records": sink.counts,
        "checkpoint": cfg.save,
        "config": {
            k: v
            for k, v in dataclasses.asdict(cfg).items()
            if k not in ("env", "ppo", "reward", "gates", "heuristic")
        },
    }
    return summary, trainer


def _counts(mapping: list[str]) -> dict[str, int]:
    from parallel_core.devices import assignment_counts

    return assignment_counts(mapping)
