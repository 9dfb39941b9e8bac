"""Tiny worlds and networks so the whole suite stays fast on 2 shared cores."""

from __future__ import annotations

from agent_async_train.config import Config
from agent_async_train.loop import Experiment


def tiny_config(**sections) -> Config:
    cfg = Config()
    g, d, p, r = cfg.game, cfg.dqn, cfg.parallel, cfg.run
    g.size, g.gems, g.walls, g.view_radius, g.max_turns, g.agents = 7, 4, 2, 2, 20, 3
    d.hidden, d.batch_size, d.buffer_size, d.learning_starts = [16], 16, 300, 40
    d.eps_decay_steps, d.target_update = 200, 20
    p.train_interval, p.replay_ratio = 2, 0.5
    r.epochs, r.episodes_per_epoch, r.eval_episodes, r.tensorboard = 2, 3, 2, False
    for section, values in sections.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return cfg


def run(cfg: Config, epochs: int | None = None) -> Experiment:
    """Start an experiment, train ``epochs`` (default ``run.epochs``) epochs, close it."""
    ex = Experiment(cfg).start()
    try:
        for _ in range(epochs or cfg.run.epochs):
            ex.run_epoch()
    finally:
        ex.close()
    return ex
