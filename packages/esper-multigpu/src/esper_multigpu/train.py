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
from .selection import PolicySelector
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
        f"val_acc {rec['mean_final_val_acc']:.3f} | added {sum(rec['added_acc']) / rec['n_envs']:+.3f} | "
        f"seeds {stages or '-'} | {rec['env_epochs_per_s']:.1f} env-epochs/s"
    )
    if rec["skipped_steps"]:
        line += f" | {rec['skipped_steps']} non-finite step(s) skipped"
    if rec.get("ppo"):
        p = rec["ppo"]
        line += f" | kl {p['approx_kl']:.1e} ent {p['entropy']:.2f}"
    return line


def run_training(
    cfg: TrainConfig,
    log: Callable[[str], None] = _stderr,
    agent_state: dict | None = None,
    learn: bool = True,
    greedy: bool = False,
    on_batch: Callable[[dict, VectorizedTrainer], None] | None = None,
    first_episode: int = 0,
    selector: PolicySelector | None = None,
) -> tuple[dict, VectorizedTrainer]:
    """Run ``cfg`` end to end; returns the JSON-able summary and the trainer (envs, agent).

    ``agent_state`` starts PPO from a trained policy; ``learn=False`` runs it without
    updates (evaluation), ``greedy=True`` takes each head's most likely action.
    ``on_batch(record, trainer)`` is called after each batch (after PPO's update), e.g. to
    keep snapshots of the policy. ``first_episode`` shifts the episodes run (their hosts
    come from ``SeedSequence(seed, spawn_key=(2, episode))``): with ``learn=False``, episodes
    a training run never reaches are a validation set of the same root seed.

    A PPO run that learns keeps a policy besides the last (``cfg.keep_policy``,
    :mod:`.selection`): ``selector`` (default: one made from ``cfg`` when the rule is not
    ``last`` or a kept-policy file is asked for) chooses it after every batch, goes into
    the checkpoint, writes the policy file and reports the choice (summary ``kept_policy``,
    telemetry ``validation`` and ``kept`` records).
    """
    from parallel_core.devices import default_device, validate_devices

    if not cfg.devices:
        cfg.devices = [default_device()]
    cfg.devices = validate_devices(cfg.devices)  # fail fast: before loading data or checkpoints
    next_batch, episodes_done, history, resumed = 0, 0, [], None
    if first_episode < 0 or (first_episode and cfg.resume):
        raise ValueError(f"first_episode must be >= 0 and cannot shift a resumed run; got {first_episode}")
    if cfg.resume:
        resumed = load_checkpoint(cfg.resume, cfg)
        next_batch, episodes_done = resumed["next_batch"], resumed["episodes_done"]
        history = list(resumed["history"])
        if episodes_done >= cfg.episodes:
            raise CheckpointError(
                f"--episodes {cfg.episodes}: checkpoint {cfg.resume} already has {episodes_done} "
                f"episode(s); --episodes is the total, pass more than {episodes_done}"
            )
    task = load_task(cfg.task, cfg.data_dir, seed=cfg.seed)
    if not cfg.quiet:
        log(f"esper: task {task.describe()}")
    trainer = VectorizedTrainer(cfg, task, log)
    state = resumed["agent"] if resumed is not None else agent_state
    if state is not None:
        try:
            trainer.agent.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, AttributeError) as exc:  # e.g. another ppo.hidden
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = f"--resume: checkpoint {cfg.resume}" if cfg.resume else "the policy"
            raise CheckpointError(f"{where} does not fit this run's policy ({first})") from exc
    if resumed is not None and not cfg.quiet:
        log(
            f"esper: resumed from {cfg.resume}: {episodes_done} of {cfg.episodes} episodes done"
        )
    start_episode = episodes_done
    if selector is None and learn and trainer.agent is not None and (cfg.keep_policy != "last" or cfg.kept_policy):
        selector = PolicySelector(cfg, log=log if not cfg.quiet else lambda s: None)
    if selector is not None:
        selector.resume(resumed.get("selection") if resumed is not None else None, trainer)
    name = cfg.mode
    t0 = time.perf_counter()
    sink = TelemetrySink(
        cfg.telemetry_dir, name, append=resumed is not None, tensorboard=cfg.tensorboard
    )
    with sink:
        if sink.set_aside is not None and not cfg.quiet:
            log(f"esper: previous telemetry moved to {sink.set_aside}")
        sink.episodes_done = episodes_done
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
            amp_effective=trainer.amp_effective,
            seed=cfg.seed,
            obs_dim=OBS_DIM,
            start_batch=next_batch,
            start_episode=start_episode,
            resumed_from=cfg.resume,
        )
        n_batches_left = math.ceil((cfg.episodes - episodes_done) / cfg.n_envs)
        total = next_batch + n_batches_left
        # one tick per epoch of a batch (all of the batch's envs advance together)
        with progress_bar(n_batches_left * cfg.max_epochs, f"esper {cfg.mode}", quiet=cfg.quiet) as bar:
            while episodes_done < cfg.episodes:
                n = min(cfg.n_envs, cfg.episodes - episodes_done)
                rec = trainer.run_batch(
                    next_batch,
                    n,
                    sink,
                    on_epoch=lambda: bar.advance(1),
                    first_episode=first_episode + episodes_done,
                    learn=learn,
                    greedy=greedy,
                )
                episodes_done += n
                next_batch += 1
                sink.episodes_done = episodes_done
                history.append(
                    {
                        k: rec[k]
                        for k in (
                            "batch",
                            "episodes",
                            "returns",
                            "final_val_acc",
                            "added_acc",
                            "seed_params",
                            "mean_return",
                            "mean_final_val_acc",
                            "env_epochs_per_s",
                            "skipped_steps",
                            "events",
                            "ppo",
                        )
                    }
                )
                if not cfg.quiet:
                    log(format_batch(rec, total))
                if on_batch is not None:
                    on_batch(history[-1], trainer)
                if selector is not None:
                    selector.after_batch(history[-1], trainer, sink)
                if cfg.save and trainer.agent is not None:
                    save_checkpoint(
                        cfg.save, trainer.agent, cfg, next_batch, episodes_done, history,
                        selector.state_dict() if selector is not None else None,
                    )  # fmt: skip
        kept = selector.finish(trainer, sink, len(history)) if selector is not None else None
    wall = time.perf_counter() - t0
    env_epochs = (episodes_done - start_episode) * cfg.max_epochs
    summary = {
        "mode": cfg.mode,
        "task": cfg.task,
        "devices": trainer.devices,
        "assignment": _counts(trainer.env_groups),
        "n_envs": cfg.n_envs,
        "episodes": episodes_done,
        "episodes_this_run": episodes_done - start_episode,
        "max_epochs": cfg.max_epochs,
        "slots": list(cfg.slots),
        "amp": cfg.amp,
        "amp_effective": trainer.amp_effective,
        "seed": cfg.seed,
        "host_params": trainer.envs[0].model.host_param_count(),
        "batches": history,
        "skipped_steps": sum(b["skipped_steps"] for b in history),
        "wall_s": wall,
        "env_epochs_per_s": env_epochs / wall if wall > 0 else 0.0,
        "telemetry": str(sink.path) if sink.path else None,
        "telemetry_records": sink.counts,
        "checkpoint": cfg.save,
        "kept_policy": kept,
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
