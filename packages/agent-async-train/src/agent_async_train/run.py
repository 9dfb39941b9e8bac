"""One training run end to end: build, (resume), epochs with logs/evals/checkpoints, summary."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from parallel_core.io import atomic_write
from parallel_core.progress import progress_bar

from . import checkpoint
from .config import Config, ConfigError
from .loop import Experiment, set_torch_threads
from .metrics import MetricsLogger

CHECKPOINT_NAME = "checkpoint.pt"


def default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = cfg.game.name.replace(":", "-").replace("/", "-").replace(".", "-")
    return Path("runs") / f"{name}-{stamp}"


def prepare_run_dir(cfg: Config, resume_path: str | None, overwrite: bool = False) -> Path:
    """The run directory; refuses to mix a fresh run into a directory that holds one.

    With ``overwrite`` the old run's files are replaced as the new run writes its own (each
    atomically), so the directory always holds one complete run's files.
    """
    if resume_path is not None:
        return Path(resume_path).parent
    run_dir = Path(cfg.run.out) if cfg.run.out else default_run_dir(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {str(run_dir)!r} is a file, not a directory")
    if overwrite:
        for name in ("metrics.csv", "summary.json"):
            (run_dir / name).unlink(missing_ok=True)  # the new run starts its own
    elif (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"{str(run_dir)!r} already holds a run; resume it with --resume {run_dir / CHECKPOINT_NAME} "
            "pick another --out, or pass --overwrite"
        )
    return run_dir


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _summary_line(row: dict) -> str:
    line = (
        f"epoch {row['epoch']:>3}  steps {row['env_steps']:>7}  return {row['mean_return']:6.2f}  "
        f"eps {row['epsilon']:.2f}  loss {row['loss']:.4f}  {row['env_steps_per_s']:7.0f} steps/s  "
        f"{row['updates_per_s']:7.0f} upd/s  lag {row['policy_lag_mean']:.2f}"
    )
    if "eval_greedy" in row:
        line += f"  greedy {row['eval_greedy']:.2f} (random {row['eval_random']:.2f})"
    return line


def start_run(cfg: Config, experiment, run_dir: Path) -> tuple[int, MetricsLogger, Path]:
    """Check the epoch budget, start the experiment's processes, write ``config.json``.

    Shared by GemGrid/PettingZoo runs and sorrel runs; returns the epoch training starts
    from, the metrics logger and the checkpoint path.
    """
    start_epoch = experiment.epoch
    if start_epoch >= cfg.run.epochs:
        raise ConfigError(
            f"the checkpoint is already at epoch {start_epoch}; pass --epochs above {start_epoch} to train more"
        )
    # Worker/learner processes first: fork (no pickling, no re-import) is only safe while this
    # process has one thread, before TensorBoard's writer and the progress bar start theirs.
    experiment.start()
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / "config.json", "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
    return start_epoch, MetricsLogger(run_dir, tensorboard=cfg.run.tensorboard), run_dir / CHECKPOINT_NAME


def train(
    cfg: Config,
    *,
    resume_state: dict | None = None,
    resume_path: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Run (or continue) training per ``cfg``; returns the summary that the CLI prints as JSON."""
    set_torch_threads(cfg.run.torch_threads)
    run_dir = prepare_run_dir(cfg, resume_path, overwrite)
    experiment = Experiment(cfg)  # game/config errors surface here, before anything is written
    if resume_state is not None:
        checkpoint.restore(experiment, resume_state)
    start_epoch, logger, ckpt_path = start_run(cfg, experiment, run_dir)
    t0 = time.perf_counter()
    steps0 = experiment.env_steps
    p = cfg.parallel
    _say(
        quiet,
        f"agent-train: {cfg.game.name} with {experiment.game.num_agents} agents on {experiment.device}, "
        f"epochs {start_epoch}->{cfg.run.epochs}, "
        f"parallel_actions={p.parallel_actions} parallel_training={p.parallel_training} "
        f"async_learning={p.async_learning} replay_ratio={p.replay_ratio} -> {run_dir}",
    )
    try:
        with progress_bar(cfg.run.epochs - start_epoch, "training", quiet=quiet) as bar:
            while experiment.epoch < cfg.run.epochs:
                row = experiment.run_epoch()
                last = experiment.epoch == cfg.run.epochs
                if experiment.epoch % cfg.run.eval_every == 0 and not last:
                    ev = experiment.evaluate(cfg.run.eval_episodes)
                    row.update(eval_greedy=ev["greedy_score"], eval_random=ev["random_score"])
                if last:
                    experiment.close()  # the learner trains the rounds already due, then joins
                    ev = experiment.evaluate(cfg.run.eval_episodes)
                    row.update(eval_greedy=ev["greedy_score"], eval_random=ev["random_score"])
                    row["updates_per_agent"] = experiment.rounds
                logger.log(experiment.history)
                if last or experiment.epoch % cfg.run.checkpoint_every == 0:
                    checkpoint.save(ckpt_path, experiment)
                _say(quiet, _summary_line(row))
                bar.advance(1)
    except BaseException:
        experiment.close(drain=False)
        raise
    finally:
        logger.close()
    wall = time.perf_counter() - t0
    final = experiment.history[-1]
    summary = {
        "game": cfg.game.name,
        "agents": experiment.game.num_agents,
        "reward_name": reward_name(experiment.game),
        "epochs": experiment.epoch,
        "env_steps": experiment.env_steps,
        "updates_per_agent": experiment.rounds,
        "greedy_score": final["eval_greedy"],
        "random_score": final["eval_random"],
        "final_train_return": final["mean_return"],
        "wall_s": wall,
        "env_steps_per_s": (experiment.env_steps - steps0) / wall if wall > 0 else 0.0,
        "parallel": cfg.to_dict()["parallel"],
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_path),
        "metrics_csv": str(logger.csv_path),
    }
    with atomic_write(run_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def reward_name(game) -> str:
    """What the game's score is called in summaries (the game's own reward)."""
    return str(getattr(game, "reward_name", "reward"))


def evaluate_checkpoint(
    path: str,
    episodes: int,
    execution: str | None = None,
    state: dict | None = None,
    record: str | None = None,
) -> dict:
    """Greedy episodes from a checkpoint, next to random play on the same seeds."""
    state = checkpoint.load(path) if state is None else state
    cfg = checkpoint.config_of(state)
    if execution is not None:
        cfg.game.execution = execution
    set_torch_threads(cfg.run.torch_threads)
    experiment = Experiment(cfg)
    checkpoint.restore(experiment, state)
    try:
        result = experiment.evaluate(episodes, record=record)
    finally:
        experiment.close()
    return {
        "checkpoint": str(path),
        "game": cfg.game.name,
        "reward_name": reward_name(experiment.game),
        "epoch": experiment.epoch,
        "env_steps": experiment.env_steps,
        "episodes": episodes,
        **result,
        **({"recording": record} if record else {}),
    }
