"""The experiment loop: collect with all agents, store per agent, train per the schedule.

Read ``Experiment.run_epoch`` top to bottom for the serial algorithm. The execution layers
are injected objects chosen from ``cfg.parallel`` and never branch the inner loop's logic:

* ``actor``    ``LoopActor`` (per agent) or ``BatchedActor`` (one batched forward);
* ``trainer``  ``SerialTrainer`` / ``BatchedTrainer`` / ``ThreadedTrainer`` for a round;
* ``learner``  ``None`` (train inline at interval boundaries) or a ``BackgroundLearner``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from parallel_core.budget import available_cores
from parallel_core.devices import DeviceError, validate_devices, visible_devices

from .acting import BatchedActor, LoopActor, PolicySnapshot, make_snapshot
from .config import Config, ConfigError, game_kwargs, validate
from .errors import GameError
from .games import Game, make_game
from .learner_process import ProcessLearner
from .learner_thread import BackgroundLearner
from .learners.dqn import check_independent, make_agents
from .schedule import UpdateSchedule, epsilon
from .training import make_trainer

# spawn_key roots so every random stream comes from the run's SeedSequence, never global RNG.
_AGENTS, _EPISODES, _EVAL_EPISODES, _EVAL_RANDOM = 0, 1, 2, 3


def _episode_seed(seed: int, root: int, index: int) -> int:
    return int(np.random.SeedSequence(seed, spawn_key=(root, index)).generate_state(1)[0])


@dataclass
class Timers:
    """Seconds spent per activity in the main (collecting) thread."""

    env: float = 0.0
    inference: float = 0.0
    buffer: float = 0.0
    training: float = 0.0  # inline training (synchronous modes)
    learner_wait: float = 0.0  # collector blocked by the replay-ratio bound (async)


class Experiment:
    """Independent DQN agents in one game, with the execution layers chosen by ``cfg.parallel``."""

    def __init__(self, cfg: Config, game: Game | None = None):
        validate(cfg)
        self.cfg = cfg
        g, d, p = cfg.game, cfg.dqn, cfg.parallel
        self.game = game if game is not None else make_game(g.name, agents=g.agents, **game_kwargs(g))
        self.seed = cfg.run.seed
        self.device = checked_device(cfg.run.device)
        agents_ss = np.random.SeedSequence(self.seed, spawn_key=(_AGENTS,))
        gm = self.game
        self.agents = make_agents(
            gm.num_agents, gm.obs_dim, gm.num_actions, gm.obs_dtype, d, agents_ss, self.device
        )
        check_independent(self.agents)
        self.actor = (
            BatchedActor(self.agents, p.acting_backend)
            if p.parallel_actions
            else LoopActor(self.agents)
        )
        self.workers = p.num_workers or available_cores()
        self.trainer = make_trainer(
            self.agents, p.parallel_training, p.training_backend, self.workers
        )
        self.schedule = UpdateSchedule(p.replay_ratio, p.train_interval, d.learning_starts)
        self.env_steps = 0
        self.rounds = 0  # training rounds done (inline mode; the learner keeps its own)
        self.episodes = 0
        self.epoch = 0
        self.history: list[dict] = []
        self.timers = Timers()
        self.learner: BackgroundLearner | ProcessLearner | None = None
        # Inline batched acting reads a snapshot too; it is rebuilt after each training round.
        self._snapshot: PolicySnapshot | None = None
        self._eval_game: Game | None = None

    # -- setup / teardown ---------------------------------------------------------------
    def start(self) -> Experiment:
        p = self.cfg.parallel
        if p.async_learning and self.learner is None and p.learner == "process":
            g = self.game
            k = self.learner_processes()
            self.learner = ProcessLearner(
                self.agents,
                agent_args=(
                    g.num_agents, g.obs_dim, g.num_actions, g.obs_dtype, self.cfg.dqn,
                    np.random.SeedSequence(self.seed, spawn_key=(_AGENTS,)), self.device,
                ),
                trainer_args=(p.parallel_training, p.training_backend, max(1, self.workers // k)),
                schedule=self.schedule,
                snapshot_interval=p.snapshot_interval,
                rounds_done=self.rounds,
                env_steps=self.env_steps,
                deterministic=p.deterministic,
                learners=k,
                max_lag=p.max_lag,
            ).start()
        elif p.async_learning and self.learner is None:
            self.learner = BackgroundLearner(
                self.trainer,
                self.schedule,
                p.snapshot_interval,
                rounds_done=self.rounds,
                env_steps=self.env_steps,
            ).start()
        return self

    def learner_processes(self) -> int:
        """How many learner processes: ``parallel.learners``, or (0) chosen from the cores.

        Per-agent training (serial, threads) costs each agent the same wherever it runs, so
        the agents spread over every core (the collector is the small share and takes its
        turn). A batched round costs almost the same for 2 agents as for 4, so batched
        training splits only over the cores the collector leaves free. Never more than agents.
        """
        p = self.cfg.parallel
        cores = available_cores()
        batched = p.parallel_training and p.training_backend == "batched"
        k = p.learners or (max(1, cores - 1) if batched else cores)
        return max(1, min(k, self.game.num_agents))

    def close(self, drain: bool = True) -> None:
        """Stop the learner (training the rounds already due) and release thread pools."""
        if self.learner is not None:
            learner, self.learner = self.learner, None
            learner.stop(drain=drain)
            self.rounds = learner.rounds
            if isinstance(learner, ProcessLearner):
                self.trainer.close()  # the collector's own trainer was never used
        else:
            self.trainer.close()

    @property
    def total_rounds(self) -> int:
        return self.learner.rounds if self.learner is not None else self.rounds

    # -- acting -------------------------------------------------------------------------
    def _acting_snapshot(self) -> PolicySnapshot | None:
        if self.learner is not None:
            return self.learner.snapshot
        if isinstance(self.actor, BatchedActor):
            if self._snapshot is None or self._snapshot.version != self.rounds:
                self._snapshot = make_snapshot(self.agents, self.rounds)
            return self._snapshot
        return None  # the loop actor reads the live networks

    # -- the algorithm ------------------------------------------------------------------
    def run_epoch(self) -> dict:
        """Play ``run.episodes_per_epoch`` episodes, training per the schedule; returns stats."""
        cfg, game, agents, timers = self.cfg, self.game, self.agents, self.timers
        d = cfg.dqn
        n = game.num_agents
        t_start = time.perf_counter()
        steps0, rounds0 = self.env_steps, self.total_rounds
        busy0 = self.learner.busy_time if self.learner is not None else 0.0
        split0 = (timers.env, timers.inference, timers.buffer, timers.training, timers.learner_wait)
        lock0 = sum(a.buffer.lock_wait for a in agents)
        returns, losses, lags = [], [], []
        for _ in range(cfg.run.episodes_per_epoch):
            obs = game.reset(seed=_episode_seed(self.seed, _EPISODES, self.episodes))
            ep_return = np.zeros(n, dtype=np.float64)
            while True:
                eps = epsilon(self.env_steps, d.eps_start, d.eps_end, d.eps_decay_steps)
                snapshot = self._acting_snapshot()
                if self.learner is not None:
                    # Policy lag: versions between the policy acting now and the one the
                    # synchronous loop would act with after the same number of steps.
                    lags.append(max(0, self.schedule.allowed(self.env_steps) - snapshot.version))
                t0 = time.perf_counter()
                actions = self.actor.act(obs, eps, snapshot)
                t1 = time.perf_counter()
                res = game.step(actions)
                t2 = time.perf_counter()
                for i in np.flatnonzero(res.alive).tolist():  # each agent's own buffer
                    agents[i].buffer.add(
                        obs[i],
                        actions[i],
                        res.rewards[i],
                        res.obs[i],
                        res.terminated[i],
                        res.truncated[i],
                    )
                t3 = time.perf_counter()
                timers.inference += t1 - t0
                timers.env += t2 - t1
                timers.buffer += t3 - t2
                self.env_steps += 1
                ep_return += res.rewards
                losses.extend(self._train_if_due())
                obs = res.obs
                if res.done:
                    break
            self.episodes += 1
            returns.append(ep_return)
        self.epoch += 1
        wall = time.perf_counter() - t_start
        if self.learner is not None:
            losses = self.learner.drain_losses()
        steps = self.env_steps - steps0
        rounds = self.total_rounds - rounds0
        busy = (
            (self.learner.busy_time - busy0)
            if self.learner is not None
            else timers.training - split0[3]
        )
        row = {
            "epoch": self.epoch,
            "env_steps": self.env_steps,
            "updates_per_agent": self.total_rounds,
            "episodes": self.episodes,
            "mean_return": float(np.mean(returns)),  # gems per agent per episode
            "epsilon": eps,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "wall_s": wall,
            "env_steps_per_s": steps / wall if wall > 0 else 0.0,
            "updates_per_s": rounds * n / wall if wall > 0 else 0.0,
            "policy_lag_mean": float(np.mean(lags)) if lags else 0.0,
            "policy_lag_max": int(np.max(lags)) if lags else 0,
            "time_env_s": timers.env - split0[0],
            "time_inference_s": timers.inference - split0[1],
            "time_buffer_s": timers.buffer - split0[2],
            "time_training_s": busy,
            "time_learner_wait_s": timers.learner_wait - split0[4],
            "time_lock_wait_s": sum(a.buffer.lock_wait for a in agents) - lock0,
        }
        for i, r in enumerate(np.mean(returns, axis=0).tolist()):
            row[f"return_agent{i}"] = r
        self.history.append(row)
        return row

    def _train_if_due(self) -> list[float]:
        """Inline mode: train the due rounds at interval boundaries. Async: hand over to the learner."""
        if self.learner is not None:
            self.learner.publish_steps(self.env_steps)
            self.timers.learner_wait += self.learner.wait_for_capacity()
            return []
        if not self.schedule.is_boundary(self.env_steps):
            return []
        losses = []
        t0 = time.perf_counter()
        for _ in range(self.schedule.allowed(self.env_steps) - self.rounds):
            round_losses = self.trainer.round()
            self.rounds += 1
            losses.append(sum(round_losses) / len(round_losses))
        self.timers.training += time.perf_counter() - t0
        return losses

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, episodes: int, random_baseline: bool = True, record: str | None = None) -> dict:
        """Greedy episodes on fixed evaluation seeds (same seeds every call), and random play.

        Uses a separate game instance and no agent RNG, so evaluating never changes training.
        """
        if self._eval_game is None:
            g = self.cfg.game
            self._eval_game = make_game(g.name, agents=g.agents, **game_kwargs(g))
        game = self._eval_game
        if self.learner is not None:
            snapshot = self.learner.snapshot
        else:
            snapshot = make_snapshot(self.agents, self.rounds)
        actor = self.actor
        greedy = []
        frames: list[np.ndarray] | None = [] if record is not None else None
        for k in range(episodes):
            obs = game.reset(seed=_episode_seed(self.seed, _EVAL_EPISODES, k))
            total = np.zeros(game.num_agents)
            drawing = frames is not None and k == 0 and hasattr(game, "gem")
            if drawing:
                from .render import gemgrid_frame

                frames.append(gemgrid_frame(game))
            while True:
                res = game.step(actor.greedy(obs, snapshot))
                total += res.rewards
                obs = res.obs
                if drawing:
                    frames.append(gemgrid_frame(game))
                if res.done:
                    break
            greedy.append(total)
        if record is not None:
            if not frames:
                raise GameError(
                    f"--record draws GemGrid and sorrel games; {self.cfg.game.name!r} has no renderer"
                )
            from .render import save_gif

            save_gif(frames, record)
        out = {
            "greedy_score": float(np.mean(greedy)),
            "greedy_per_agent": np.mean(greedy, axis=0).tolist(),
        }
        if random_baseline:
            out["random_score"] = random_score(game, episodes, self.seed)
        return out


def random_score(game: Game, episodes: int, seed: int) -> float:
    """Mean return per agent per episode of uniformly random play on the evaluation seeds."""
    scores = []
    for k in range(episodes):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_EVAL_RANDOM, k)))
        game.reset(seed=_episode_seed(seed, _EVAL_EPISODES, k))
        total = np.zeros(game.num_agents)
        while True:
            res = game.step(rng.integers(0, game.num_actions, size=game.num_agents))
            total += res.rewards
            if res.done:
                break
        scores.append(total)
    return float(np.mean(scores))


def checked_device(spec: str) -> str:
    """``spec`` if this process can use it (torch's view), else a ``ConfigError`` saying what is visible."""
    try:
        return validate_devices([spec])[0]
    except DeviceError as err:
        raise ConfigError(f"--device: {err} (visible devices: {', '.join(visible_devices())})") from None


def set_torch_threads(n: int) -> None:
    """One intra-op thread by default: the parallelism lives in our threads, not in torch's."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
